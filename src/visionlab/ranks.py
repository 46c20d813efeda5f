"""The processes of a run on several (`trainer.devices=N`, or torchrun's N): started and watched here, once Hydra
has composed the config and made the run folder, so that the N processes are one run in one folder
(docs/remote.md; docs/architecture.md, "Several processes").

vl-train starts N ranks with torch's elastic launcher (what torchrun runs) and waits for them, holding the folder's
lock; rank 0 writes the run's files and its log lines to the terminal and train.log. Under `torchrun ... vl-train`
every process runs vl-train: rank 0 composes the config and makes the folder as a run of one process does, then
hands both to the others (`handed_to_ranks`), which never start Hydra.

Signals: SIGTERM, SIGUSR2 (and SIGHUP with trainer.on_hangup=stop) sent to vl-train are passed on to every rank by
the launcher; Ctrl-C from a terminal reaches every rank by itself (they share its process group), so vl-train
leaves it to them instead of passing a second one. A rank that dies makes the launcher end the others at once.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from visionlab import terminal
from visionlab.console import ConsoleHandler, RunLogFile
from visionlab.errors import Interrupted
from visionlab.paths import config_dir

log = logging.getLogger("visionlab")


class RankFailed(RuntimeError):
    """A rank ended without finishing (killed, or crashed before it could say why): the others were stopped."""


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


def started(count: int, entrypoint: Callable[..., Any], *args: Any, on_hangup: str) -> Any:
    """`entrypoint(*args)` on `count` new processes on this machine; rank 0's return value.

    Raises RankFailed naming the first rank that died, and Interrupted for a signal that stopped them all (each
    rank saved and wrote what it could first)."""
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.api import DefaultLogsSpecs
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    passed_on = ["SIGTERM", "SIGUSR2", *(["SIGHUP"] if on_hangup == "stop" else [])]
    for launcher in ("torch.distributed.elastic", "torch.multiprocessing"):  # what ended the ranks is said here
        logging.getLogger(launcher).setLevel(logging.CRITICAL)
    try:
        with terminal_interrupts_left_to_ranks(), ranks_temporary_folder() as folder, handlers_kept(passed_on) as kept:
            config = LaunchConfig(
                min_nodes=1,
                max_nodes=1,
                nproc_per_node=count,
                logs_specs=DefaultLogsSpecs(log_dir=str(folder / "launcher")),  # else a torchelastic_* folder left
                run_id=uuid.uuid4().hex,
                rdzv_backend="c10d",
                rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone takes
                max_restarts=0,
                signals_to_handle=",".join(passed_on),
            )
            return elastic_launch(config, entrypoint)(*args)[0]
    except SignalException as exc:
        stopped = Interrupted(exc.sigval)
        if callable(kept.get(exc.sigval)) and kept[exc.sigval] is not terminal.on_hangup:
            os.kill(os.getpid(), exc.sigval)  # submitit's SIGUSR2 handler requeues a preempted SLURM job
        raise stopped from None
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise RankFailed(f"rank {rank} of {count} (pid {failure.pid}) {ended(failure.exitcode)}") from None


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


def peer_lost(exc: BaseException) -> bool:
    """A collective failed because another rank is gone: the launcher (or torchrun) names it, not this rank."""
    from torch.distributed import DistError

    return isinstance(exc, DistError) or "Connection closed by peer" in str(exc) or "Connection reset" in str(exc)
