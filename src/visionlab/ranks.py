"""The processes of a run on several (`trainer.devices=N`, or torchrun's N): started and watched here, once Hydra
has composed the config and made the run folder, so that the N processes are one run in one folder
(docs/remote.md; docs/architecture.md, "Several processes").

vl-train starts N ranks with torch's elastic launcher (what torchrun runs) and waits for them, holding the folder's
lock; rank 0 writes the run's files and its log lines to the terminal and train.log. Under `torchrun ... vl-train`
every process runs vl-train: rank 0 composes the config and makes the folder as a run of one process does, then
hands both to the others (`handed_to_ranks`), which never start Hydra. Across machines (`trainer.nodes`), the
vl-train of each node starts its own ranks, which meet those of node 0 at its address (torch's static rendezvous);
node 0's vl-train runs Hydra's job, the others none (launch.other_node), and their ranks take the run from rank 0.

Signals: SIGTERM, SIGUSR2 (and SIGHUP with trainer.on_hangup=stop) sent to vl-train are passed on to every rank by
the launcher; Ctrl-C from a terminal reaches every rank by itself (they share its process group), so vl-train
leaves it to them instead of passing a second one. A rank that dies makes the launcher end the others at once, and
one on another node the lost connections of the ranks here (`PEER_GONE`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionlab import patches, terminal
from visionlab.console import ConsoleHandler, RunLogFile
from visionlab.errors import Interrupted
from visionlab.paths import config_dir

log = logging.getLogger("visionlab")


class RankFailed(RuntimeError):
    """A rank ended without finishing (killed, or crashed before it could say why): the others were stopped."""


# How long (seconds) a node waits for the others at the rendezvous: long enough to start the command on each by hand.
RENDEZVOUS_TIMEOUT = 600
# A rank's exit code when another rank is gone (a lost connection): its launcher names the rank that died where it
# can see it, on its own node, and else says another node's processes are gone. Never vl-train's own exit code.
PEER_GONE = 76
STOPS = range(129, 192)  # a rank's exit code when a signal stopped the run: 128 + the signal's number


def torchrun_follower() -> bool:
    """This process is one of torchrun's ranks other than 0: it takes the run from rank 0 (`handed_to_ranks`)."""
    from visionlab.training import distributed

    return distributed.launched() and os.environ["RANK"] != "0"


def slurm_task_of_several() -> bool:
    """This process is one task of a SLURM job of several tasks that submitit started (`tasks_per_node`, `nodes`):
    the tasks are one run's ranks, so torchrun's variables are set here from SLURM's, by submitit's
    TorchDistributedEnvironment: the task's SLURM_PROCID is its rank, the job's first node the address of rank 0,
    and a port drawn from the job id, the same in every task."""
    if os.environ.get("SUBMITIT_EXECUTOR") != "slurm" or int(os.environ.get("SLURM_NTASKS", "1")) < 2:
        return False
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)  # LOCAL_RANK picks the GPU
    return True


@dataclass(frozen=True)
class Nodes:
    """The machines a run spans (trainer.nodes, node_rank, rendezvous): each starts its own ranks, and they meet at
    `rendezvous`, node 0's address, whose launcher holds the store the ranks find each other through. Global rank 0
    is on node 0, the node that composed the run."""

    count: int = 1
    rank: int = 0
    rendezvous: str | None = None


ALONE = Nodes()


def started(count: int, entrypoint: Callable[..., Any], *args: Any, on_hangup: str, nodes: Nodes = ALONE) -> Any:
    """`entrypoint(*args)` on `count` new processes on this machine (with those of the other `nodes`); the return
    value of its lowest rank here (rank 0's, on node 0).

    Raises RankFailed naming the first rank that died (or the other node that is gone, or the rendezvous that
    failed), and Interrupted for a signal that stopped them all (each rank saved and wrote what it could first)."""
    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    passed_on = ["SIGTERM", "SIGUSR2", *(["SIGHUP"] if on_hangup == "stop" else [])]
    # What ended the ranks is said here. torch's elastic modules set each its own logger's level (WARNING), which
    # the level of their parent does not override: "Received 15 death signal" on a stop.
    for name in ["torch.distributed.elastic", "torch.multiprocessing", *logging.root.manager.loggerDict]:
        if name.startswith(("torch.distributed.elastic", "torch.multiprocessing")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    if nodes.count == 1:
        meeting = {"rdzv_backend": "c10d", "rdzv_endpoint": "localhost:0"}  # a free port, as torchrun --standalone
    else:  # torchrun --nnodes=N --node-rank=K --master-addr=HOST --master-port=PORT
        meeting = {
            "rdzv_backend": "static",
            "rdzv_endpoint": nodes.rendezvous,
            "rdzv_configs": {"rank": nodes.rank, "timeout": RENDEZVOUS_TIMEOUT},
        }
        if nodes.rank:
            reached(nodes.rendezvous, RENDEZVOUS_TIMEOUT)
    try:
        with (
            terminal_interrupts_left_to_ranks(),
            ranks_temporary_folder() as folder,
            handlers_kept(passed_on) as kept,
            patches.no_exit_barrier(),
        ):
            config = LaunchConfig(
                min_nodes=nodes.count,
                max_nodes=nodes.count,
                nproc_per_node=count,
                logs_specs=DefaultLogsSpecs(log_dir=str(folder / "launcher")),  # else a torchelastic_* folder left
                run_id=uuid.uuid4().hex if nodes.count == 1 else "visionlab",  # the nodes' own is the same on each
                max_restarts=0,
                signals_to_handle=",".join(passed_on),
                **meeting,
            )
            returned = elastic_launch(config, entrypoint)(*args)
            return returned[min(returned)]
    except SignalException as exc:
        stopped = Interrupted(exc.sigval)
        if callable(kept.get(exc.sigval)) and kept[exc.sigval] is not terminal.on_hangup:
            os.kill(os.getpid(), exc.sigval)  # submitit's SIGUSR2 handler requeues a preempted SLURM job
        raise stopped from None
    except ChildFailedError as exc:
        codes = {failure.exitcode for failure in exc.failures.values()}
        if codes <= set(STOPS):  # a signal's stop, agreed by every rank (launch.node_job)
            raise Interrupted(max(codes) - 128) from None
        raise RankFailed(failed(exc.failures, count, nodes.count)) from None
    except DistError as exc:  # the rendezvous: an address in use, or a node that never came
        met = f"the {nodes.count} nodes did not meet at trainer.rendezvous={nodes.rendezvous}"
        raise RankFailed(f"{met}: {str(exc).strip().splitlines()[0]}") from None


def failed(failures: dict[int, Any], count: int, nodes: int) -> str:
    """Which rank ended the run: the first to die here, or, where every rank here lost a peer, another node's."""
    own = {rank: failure for rank, failure in failures.items() if failure.exitcode not in (PEER_GONE, *STOPS)}
    if not own:
        return (
            "a process on another node is gone (that node stopped, or the network between them failed): the "
            f"{count} process{'es' * (count > 1)} here {'were' if count > 1 else 'was'} stopped"
        )
    rank, failure = min(own.items(), key=lambda item: item[1].timestamp)
    return f"rank {rank} of {count * nodes} (pid {failure.pid}) {ended(failure.exitcode)}"


def reached(address: str, timeout: int) -> None:
    """Wait until node 0 listens at `address` (its launcher starts the rendezvous), at most `timeout` seconds: a
    node started first waits here in silence, where torch's own wait would end in a wall of C++ log lines."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise RankFailed(
                    f"nobody answered at trainer.rendezvous={address} within {timeout} s ({exc.strerror or exc}): "
                    "start node 0 (trainer.node_rank=0) with the same command, and check its address and port"
                ) from None
            time.sleep(1)


def ended(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name}: the other processes were stopped"
    return f"exited with code {exitcode}: the other processes were stopped"


@contextmanager
def handlers_kept(names: list[str]) -> Iterator[dict[int, Any]]:
    """The handlers of the signals the launcher passes on (it sets its own, and leaves them), restored when it
    returns: each signal's handler from before, by number."""
    kept = {signum: signal.getsignal(signum) for signum in (signal.Signals[name] for name in names)}
    try:
        yield kept
    finally:
        if threading.current_thread() is threading.main_thread():
            for signum, handler in kept.items():
                if handler is not None:
                    signal.signal(signum, handler)


@contextmanager
def ranks_temporary_folder() -> Iterator[Path]:
    """The ranks' TMPDIR, and the launcher's logs: one folder, removed once they have ended however they ended (a
    rank killed cannot remove its own files; experiment.run.written_here puts the other ranks' run files there)."""
    previous = os.environ.get("TMPDIR")
    with tempfile.TemporaryDirectory(prefix="visionlab-ranks-") as folder:
        os.environ["TMPDIR"] = folder
        try:
            yield Path(folder)
        finally:
            if previous is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = previous


@contextmanager
def terminal_interrupts_left_to_ranks() -> Iterator[None]:
    """Ctrl-C is the ranks' own: they save and end with 130. A Python handler, not SIG_IGN, which the ranks would
    inherit. Off the main thread (a notebook's worker thread) no handler can be set, and none is needed: Python
    delivers the signal to the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def log_as_rank(run_dir: Path, rank: int) -> None:
    """A rank's logging: rank 0's lines go to the terminal and the run's train.log, as vl-train's own do
    (conf/hydra/job_logging/visionlab.yaml's format); the other ranks' stdout is silenced (no second progress bar)
    and only a bug of their own reaches stderr, naming the rank."""
    formats = OmegaConf.load(config_dir() / "hydra" / "job_logging" / "visionlab.yaml").formatters.simple
    formatter = logging.Formatter(formats.format, formats.datefmt)
    root = logging.getLogger()
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    root.setLevel(logging.INFO)
    if rank == 0:
        file = RunLogFile(run_dir / "train.log", mode="a")
        for handler in (ConsoleHandler(), file):
            handler.setFormatter(formatter)
            root.addHandler(handler)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    # a bug of its own, with its traceback: the one end the ranks do not share (rank 0 says a divergence, a stop)
    own_bug = logging.StreamHandler(sys.stderr)
    own_bug.addFilter(lambda record: record.exc_info is not None)
    own_bug.setFormatter(logging.Formatter(f"rank {rank}: %(message)s"))
    root.addHandler(own_bug)


# What a collective raises when another rank is gone. NCCL's errors and the TCPStore's are typed (DistError); gloo's
# are not: ProcessGroupGloo rethrows its transport's error as a plain RuntimeError (torch 2.14), whose text says what
# happened to the socket: closed (the peer was gone before or while this rank waited) or reset (mid-transfer).
GLOO_PEER_GONE = ("Connection closed by peer", "Connection reset by peer")


def peer_lost(exc: BaseException) -> bool:
    """A collective failed because another rank is gone: the launcher (or torchrun) names it, not this rank."""
    from torch.distributed import DistError

    if isinstance(exc, DistError):
        return True
    return type(exc) is RuntimeError and any(words in str(exc) for words in GLOO_PEER_GONE)
