"""One run, or a sweep, from vl-train's arguments: the one path that `vl-train` and `visionlab.train` share.

Hydra composes the config, makes the run folder (its lock, `.hydra/`, train.log) and calls `train_job`, which
hands the run to `experiment.run`. Nothing here exits the process: a job that ends badly says why in the run's
log and raises `JobEnded` (a sweep's job: `JobFailed`) with its exit code (docs/architecture.md, "Exit codes");
a refused config or folder raises `UserError` with the one line to show, a disk full before the run `DiskFull`.
The CLI turns these into exit codes (cli.py), the Python API into exceptions (api.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import sys
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.object_type import ObjectType
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionlab import patches, ranks, run_folder, terminal
from visionlab.config_errors import one_line
from visionlab.console import RunLogFile
from visionlab.errors import (
    DiskFull,
    Interrupted,
    RunStopped,
    UserError,
    no_space,
    quiet_full_disk_in_threads,
    writing,
)
from visionlab.parallel_jobs import label_parallel_job
from visionlab.paths import config_dir
from visionlab.training.resume import is_hydra_setting, resume_arguments
from visionlab.trust import split_config_dirs

log = logging.getLogger("visionlab")
# Importing optuna (a search's plugin, found by Hydra; a pruned trial's job) imports alembic, which logs a line per
# plugin it sets up: seven lines of "setup plugin alembic..." before a search's first.
logging.getLogger("alembic").setLevel(logging.WARNING)
run_folder.register_resolver()  # here, at import: a launcher's worker process imports this module for train_job


def torchvision_classifiers() -> str:
    """`${torchvision_classifiers:}` in `vl-train --help`: model=torchvision's names. Hydra resolves the help
    template in every composition (a merge onto an interpolation dereferences it), so the names are read only
    when the help is shown: importing torchvision's models, and torch._dynamo with them, takes over a second."""
    if not session.help_shown:
        return ""
    from visionlab.models.torchvision import builders

    return textwrap.fill(", ".join(builders()), width=110, initial_indent="    ", subsequent_indent="    ")


OmegaConf.register_new_resolver("torchvision_classifiers", torchvision_classifiers, replace=True)


def config_groups() -> str:
    """`${config_groups:}` in `vl-train --help`: each group with its options, as Hydra's $APP_CONFIG_GROUPS lists
    them, less an experiment's own options of a group (conf/optimizer/cifar10_fast/momentum.yaml, chosen as
    optimizer=cifar10_fast/momentum by experiment=cifar10_fast), which Hydra would list as groups of their own
    (`optimizer/cifar10_fast: momentum`): they are parts of the experiment, not groups to choose from."""
    if not session.help_shown:
        return ""
    loader = GlobalHydra.instance().config_loader()
    experiments = set(loader.get_group_options("experiment"))
    listed: dict[str, str] = {}

    def add(parent: str) -> None:
        for name in loader.list_groups(parent):
            group = f"{parent}/{name}" if parent else name
            if group == "hydra" or (parent and name in experiments):
                continue
            if options := loader.get_group_options(group, ObjectType.CONFIG):
                listed[group] = ", ".join(sorted(options))
            add(group)

    add("")
    return "\n".join(f"{group}: {options}" for group, options in sorted(listed.items()))


OmegaConf.register_new_resolver("config_groups", config_groups, replace=True)

# Hydra's ValueError for two of its modes at once (vl-train -m --cfg)
HYDRA_MODES_CLASH = "Only one of --run, --multirun"


@dataclass(frozen=True)
class Outcome:
    """A job that ran to its end (completed, pruned or an lr range test): its folder and what it wrote."""

    run_dir: Path
    metrics: dict[str, Any]


class Ending:
    """How a job ended badly, once it has said why in its log: its exit code, its folder, and what ended it."""

    def __init__(self, exit_code: int, run_dir: Path, reason: BaseException):
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code
        self.run_dir = run_dir
        self.reason = reason

    def __reduce__(self):
        """A sweep's job may end in another process (joblib, SLURM), whose launcher pickles this back."""
        return type(self), (self.exit_code, self.run_dir, portable(self.reason))


def portable(reason: BaseException) -> BaseException:
    """`reason` if it survives pickling, else a RuntimeError that says what it was."""
    try:
        return pickle.loads(pickle.dumps(reason))
    except Exception:
        return RuntimeError(f"{type(reason).__name__}: {reason}")


class JobEnded(Ending, BaseException):
    """A single run's end, or a signal's in a sweep (which stops the sweep). A BaseException, as sys.exit's is:
    Hydra's job runner lets it through, so it neither prints "Error executing job" nor goes on to the next job."""


class JobFailed(Ending, Exception):
    """A sweep's job ended badly: Hydra's launcher records it and runs the other jobs, then raises it."""


@dataclass
class Session:
    """What the jobs of one `compose_and_run` call report back to it (module state: Hydra calls `train_job`)."""

    guard_terminal: bool = True  # the CLI's, and a launcher's worker process's; visionlab.train runs unguarded
    outcomes: list[Outcome] | None = None
    single_run: bool = False  # a single run (not a sweep) has started: see patches.exit_without_teardown
    sweep_dir: Path | None = None  # a sweep's folder, once it has started (RecordSweep)
    help_shown: bool = False  # vl-train --help: its template lists the groups and torchvision's classifiers


session = Session()


class RecordSweep(Callback):
    """Hydra callback (conf/train.yaml): a sweep's folder, for `visionlab.sweep` to read its jobs' runs from
    (they may have run in other processes: hydra/launcher=joblib)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        session.sweep_dir = Path(config.hydra.sweep.dir)


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def train_job(cfg: DictConfig) -> float:
    if session.guard_terminal:
        terminal.install()  # again for a job in a launcher's worker process
    quiet_full_disk_in_threads()
    label_parallel_job()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    session.single_run = HydraConfig.get().mode == RunMode.RUN
    metrics = said(run_dir, lambda: run_job(cfg, run_dir))
    if session.outcomes is not None:
        session.outcomes.append(Outcome(run_dir, metrics))
    return float(metrics.get(cfg.objective) or "nan")  # lr_find=true has no objective


def run_job(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """The run in this process, on `trainer.devices` processes started here, or as rank 0 of torchrun's (or of a
    SLURM job's tasks)."""
    from visionlab import experiment  # data, models and training load only once the config has composed
    from visionlab.config import validate
    from visionlab.training import distributed

    trainer = cfg.trainer
    nodes = ranks.Nodes(trainer.get("nodes", 1), trainer.get("node_rank", 0), trainer.get("rendezvous"))
    if trainer.get("devices", 1) == 1 and nodes == ranks.ALONE and not distributed.launched():
        return experiment.run(cfg, run_dir)
    if distributed.launched():  # the others wait in handed_to_ranks, for the run or for None
        distributed.join()
        try:
            try:
                job = launched_job(cfg, run_dir)
            except Exception:
                distributed.from_main(None)  # the other ranks end; this one says why
                raise
            distributed.from_main(job)
            return experiment.run(cfg, run_dir)
        finally:
            distributed.leave()
    validate(cfg)  # a bad value refused once, here, and not by every rank
    if nodes.rank:  # only a command line's trainer.node_rank makes a node other than 0 (`other_node`)
        raise UserError(f"trainer.node_rank={nodes.rank} goes on that node's command line, not in a config file")
    if nodes.count > 1 and HydraConfig.get().mode == RunMode.MULTIRUN:
        raise UserError(
            f"trainer.nodes={nodes.count} in a sweep (-m): the nodes train one run together, so start each run on "
            "every node (a sweep's jobs on several nodes: hydra/launcher=slurm with hydra.launcher.nodes)"
        )
    job = (OmegaConf.to_container(cfg, resolve=True), str(run_dir), hydra_settings())
    count = distributed.processes(trainer.devices)
    if count == 1 and nodes.count == 1:
        return experiment.run(cfg, run_dir)
    code, value = ranks.started(count, node_job, job, on_hangup=trainer.on_hangup, nodes=nodes)
    if code:  # rank 0 has said why
        end_job(code, run_dir, value)
    return value


def launched_job(cfg: DictConfig, run_dir: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """What rank 0 of torchrun's processes (or of a SLURM job's tasks) hands the others, once the config is valid.
    Those processes are the run's: trainer.devices must be 1 or their number, as no rank starts more."""
    from visionlab.config import validate
    from visionlab.training import distributed

    world = distributed.world_size()
    if cfg.trainer.get("nodes", 1) > 1:
        raise UserError(
            f"trainer.nodes={cfg.trainer.nodes} with {world} processes launched (torchrun's, or a SLURM job's tasks): "
            "their launcher spans the nodes (torchrun --nnodes, hydra.launcher.nodes), so use trainer.nodes=1"
        )
    if distributed.processes(cfg.trainer.devices) not in (1, world):
        raise UserError(
            f"trainer.devices={cfg.trainer.devices} with {world} processes launched (torchrun's, or a SLURM job's "
            f"tasks): use trainer.devices=1 or {world}"
        )
    validate(cfg)  # a bad value refused once, here, and not by every rank
    return OmegaConf.to_container(cfg, resolve=True), str(run_dir), hydra_settings()


def hydra_settings() -> dict[str, Any]:
    """The job's Hydra config for its ranks, whose code reads it as the job's own (the overrides for summary.md and
    HParams, a sweep's trial for pruning, its parallel jobs for the threads): resolved where it resolves, without
    `run` and `sweep`, which name the folders (resolving `${new_folder:...}` again would make another)."""
    hydra = HydraConfig.get()
    settings = OmegaConf.to_container(hydra, resolve=False)
    # a sweep's folder, and what names it (submitit's folder), resolved only in a sweep, whose folder is made already
    unread = ("run", "sweep") if hydra.mode == RunMode.MULTIRUN else ("run", "sweep", "launcher", "sweeper")
    for key in unread:
        settings.pop(key, None)
    for key, value in settings.items():
        if OmegaConf.is_config(hydra[key]):
            with contextlib.suppress(OmegaConfBaseException):  # a missing value: hydra.job.num in a single run
                value = OmegaConf.to_container(hydra[key], resolve=True)
        settings[key] = value
    return settings


def rank_job(config: dict[str, Any], run_dir: str, hydra: dict[str, Any]) -> tuple[int, Any]:
    """One rank of a run that vl-train (or torchrun) started on several processes: the run's code, as a run of one
    process runs it, ended with its exit code and rank 0's metrics (or what stopped it)."""
    from visionlab import experiment
    from visionlab.training import distributed

    if not HydraConfig.initialized():  # the job's, as HydraConfig.get() gives it
        HydraConfig.instance().cfg = OmegaConf.create({"hydra": hydra})

    folder = Path(run_dir)
    ranks.log_as_rank(folder, int(os.environ["RANK"]))
    terminal.install()  # every rank: a hangup reaches them all, and is no stop unless trainer.on_hangup=stop
    quiet_full_disk_in_threads()
    distributed.join()
    try:
        return 0, said(folder, lambda: experiment.run(OmegaConf.create(config), folder))
    except (JobEnded, JobFailed) as ended:
        return ended.exit_code, portable(ended.reason)
    finally:
        distributed.leave()


def node_job(job: tuple[dict[str, Any], str, dict[str, Any]] | None) -> tuple[int, Any]:
    """A rank that vl-train started: the job from rank 0, on the node that composed it (the ranks of a node other
    than 0 have none), then the run as `rank_job` runs it, and its exit code and what ended it back to vl-train.

    Two ends exit instead, for the launcher to read from the exit code. A rank that lost another exits with
    ranks.PEER_GONE, for its launcher to name the rank that died, or to say another node's did (it would wait for
    that node). A rank stopped by a signal exits with the signal's code: a launcher that received the signal no
    longer reads what its ranks return, and would keep them 30 seconds before killing them."""
    from visionlab.training import distributed

    distributed.join()
    code, reason = rank_job(*distributed.from_main(job))
    if code and ranks.peer_lost(reason):
        sys.exit(ranks.PEER_GONE)
    if code in ranks.STOPS:
        sys.exit(code)
    return code, reason


def handed_to_ranks() -> None:
    """torchrun's ranks other than 0 (and a SLURM job's tasks): the config and run folder that rank 0 composed and
    made, then the run."""
    from visionlab.training import distributed

    distributed.join()
    handed = distributed.from_main(None)
    if handed is None:  # rank 0 refused the config, and says why
        distributed.leave()
        return
    config, run_dir, hydra = handed
    code, reason = rank_job(config, run_dir, hydra)
    if code:
        raise JobEnded(code, Path(run_dir), reason)


def slurm_tasks_joined() -> None:
    """A SLURM job of several tasks: submitit runs the launcher's Hydra job in every task, and each would make,
    lock and write the run folder (train.log, `.hydra/`) as a run of its own. Task 0 runs it, as torchrun's rank 0
    does; the others take the config and folder from it (`handed_to_ranks`) instead of Hydra's job set-up, and
    write nothing there. Their result is None: task 0's is the job's, and rank 0 says how the run ended."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher

    hydra_job = BaseSubmititLauncher.__call__

    def task(self: BaseSubmititLauncher, *args: Any, **kwargs: Any) -> Any:
        if not ranks.torchrun_follower():
            return hydra_job(self, *args, **kwargs)
        with contextlib.suppress(JobEnded):
            handed_to_ranks()
        return None

    BaseSubmititLauncher.__call__ = task


def said(run_dir: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`work()`'s metrics; a bad end said in the run's log (once) and raised as the job's end with its exit code."""
    try:
        with writing(run_dir, "the run's files"):
            return work()
    except (JobEnded, JobFailed):
        raise
    except UserError as exc:
        log.error("error: %s", exc)
        end_job(exc.exit_code, run_dir, exc)
    except DiskFull as exc:  # wherever the write was: training saved what it could (experiment.run)
        log.error("error: %s", exc.line(run_dir))
        end_job(exc.exit_code, run_dir, exc)
    except RunStopped as exc:  # already said, and saved, by experiment.run
        end_job(exc.exit_code, run_dir, exc)
    except ranks.RankFailed as exc:
        log.error("error: %s; %s", exc, resumable(run_dir))
        end_job(1, run_dir, exc)
    except Exception as exc:
        if ranks.peer_lost(exc):  # the launcher names the rank that is gone
            log.error("another process of this run is gone: %s", exc, extra={"file_only": True})
            end_job(1, run_dir, exc)
        log.error("unexpected error", exc_info=True, extra={"file_only": True})
        log.error(
            "error: unexpected %s: %s (a bug: the traceback is in %s)", type(exc).__name__, exc, run_dir / "train.log"
        )
        end_job(1, run_dir, exc)


def resumable(run_dir: Path) -> str:
    last = run_dir / "last.pt"
    return f"resume={run_dir} carries on from its last.pt" if last.exists() else "nothing was saved"


def end_job(exit_code: int, run_dir: Path, reason: BaseException) -> NoReturn:
    """A single run ends here; a sweep's job fails and the sweep goes on, unless a signal stopped it. A rank of a
    run on several processes (no Hydra there) ends as a single run does."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN and exit_code < 128:
        raise JobFailed(exit_code, run_dir, reason) from reason
    raise JobEnded(exit_code, run_dir, reason) from reason


def compose_and_run(args: list[str], guard_terminal: bool = True) -> list[Outcome]:
    """vl-train's arguments (overrides, -m, --config-dir, ...) run as `vl-train` runs them; the finished jobs.

    Hydra reads its arguments from sys.argv, which holds them for the call only.
    """
    session.guard_terminal, session.outcomes, session.single_run, session.sweep_dir = guard_terminal, [], False, None
    session.help_shown = bool({"--help", "-h"} & set(args))
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing; one_line says it
    if "WORLD_SIZE" in os.environ and ranks.torchrun_follower():  # torch loads only for a process torchrun started
        handed_to_ranks()
        return session.outcomes
    try:
        if (node := other_node(args)) is not None:
            joined_node(node)
            return session.outcomes
        arguments = resume_arguments(options_first(args))
        with patches.skip_hydra_mode_compose(), command_line(arguments):
            train_job()
    except JobFailed:
        raise
    except (UserError, HydraException, OmegaConfBaseException, OSError) as exc:
        raise refused(exc, args) from None
    except ValueError as exc:
        # logging.config's wrapping of what run_folder.RunLog refused
        if isinstance(exc.__cause__, (UserError, OSError)):
            raise refused(exc.__cause__, args) from None
        if not str(exc).startswith(HYDRA_MODES_CLASH):  # only Hydra's check of its own flags is a user's mistake
            raise
        raise UserError(
            f"{exc}: -m with --cfg or --info is refused; drop -m to see the config one job composes"
        ) from None
    return session.outcomes


class NodeEnded(Exception):
    """A node other than 0 ended and the run did not complete: the one line to say (its ranks say nothing, rank 0
    being on node 0), and the exit code."""

    def __init__(self, line: str, exit_code: int):
        super().__init__(line)
        self.exit_code = exit_code


def other_node(args: list[str]) -> DictConfig | None:
    """The config of a node other than 0, which its command line names (`trainer.node_rank=K`, as torchrun's
    --node-rank): composed without Hydra's job, so that no run folder is made here, and its trainer's values
    checked. None for node 0 and a run on one node. Node 0 alone reads `resume=` and decides the run."""
    if not any(arg.startswith("trainer.node_rank=") and arg.split("=", 1)[1] != "0" for arg in args):
        return None
    from visionlab.checks import check_targets
    from visionlab.config import check_nodes

    folders, rest = split_config_dirs(args)
    name = next((rest[i + 1] for i, arg in enumerate(rest[:-1]) if arg in ("--config-name", "-cn")), "train")
    overrides = [arg for arg in rest if "=" in arg and not arg.startswith("-") and not is_hydra_setting(arg)]
    searchpath = f"hydra.searchpath=[{','.join(f'file://{Path(d).expanduser().resolve()}' for d in folders)}]"
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name=name, overrides=[*overrides, searchpath])
    check_targets(cfg.trainer, "trainer.")
    check_nodes(cfg.trainer)
    return cfg if cfg.trainer.node_rank else None


def joined_node(cfg: DictConfig) -> None:
    """A node other than 0: its ranks meet node 0's at the rendezvous and take the run from rank 0 (`node_job`),
    its config and folder, which they write nothing into. This vl-train starts them, and says in one line that the
    run did not complete, where it did not (node 0's terminal and train.log say why)."""
    from visionlab.console import console
    from visionlab.training import distributed

    trainer = cfg.trainer
    count = distributed.processes(trainer.devices)
    session.single_run = True
    console.print(
        f"node {trainer.node_rank} of {trainer.nodes}: {count} process{'es' * (count > 1)} joining the run at "
        f"{trainer.rendezvous}; node 0 writes it (its terminal, its run folder)",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    nodes = ranks.Nodes(trainer.nodes, trainer.node_rank, trainer.rendezvous)
    try:
        code, _ = ranks.started(count, node_job, None, on_hangup=trainer.on_hangup, nodes=nodes)
    except ranks.RankFailed as exc:
        raise NodeEnded(str(exc), 1) from None
    except Interrupted as exc:  # this node's own signal: every node stops at the same step
        code = exc.exit_code
    if code:
        raise NodeEnded(f"the run ended with exit code {code}: node 0's terminal and train.log say why", code)


@contextlib.contextmanager
def command_line(arguments: list[str]) -> Iterator[None]:
    saved = sys.argv[:]
    sys.argv[1:] = arguments
    try:
        yield
    finally:
        sys.argv[:] = saved


def refused(exc: BaseException, args: list[str]) -> UserError | DiskFull:
    """A disk full before the run started, or the one line that says what to change."""
    if no_space(exc):
        return full_before_the_run(exc)
    return UserError(one_line(exc, args))


def full_before_the_run(exc: BaseException) -> DiskFull:
    """No space for Hydra's own first writes (.hydra/, the folder's lock), said as a full disk in training is.
    Hydra has forgotten its config by now; the run's log file, opened just before, still names the run
    directory, else the write that failed does."""
    logs = [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, RunLogFile)]
    run_dir = logs[0].parent if logs else Path(getattr(exc, "filename", None) or Path.cwd())
    return DiskFull(run_dir, "the run's config (.hydra/)" if logs else "the run's files")


# Hydra's options that take a value (vl-train --hydra-help); --info takes one of INFO_TOPICS, or none.
VALUED_OPTIONS = (
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--cfg",
    "-c",
    "--package",
    "-p",
    "--experimental-rerun",
)
INFO_OPTIONS = ("--info", "-i")
INFO_TOPICS = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def options_first(args: list[str]) -> list[str]:
    """Hydra's options, each with its value, before the overrides: its parser refuses an option written after an
    override (`vl-train model=cnn -m optimizer.lr=0.1,0.01`), which is the order users write them in. A bare
    --info goes last, where no override can be taken for its optional value."""
    options, overrides, last = [], [], []
    position = 0
    while position < len(args):
        arg = args[position]
        follows = args[position + 1] if position + 1 < len(args) else None
        taken = 2 if arg in VALUED_OPTIONS or (arg in INFO_OPTIONS and follows in INFO_TOPICS) else 1
        kind = last if arg in INFO_OPTIONS and taken == 1 else options if arg.startswith("-") else overrides
        kind.extend(args[position : position + taken])
        position += taken
    return options + overrides + last


if ranks.slurm_task_of_several():  # at import: submitit's task imports this module for train_job, then runs it
    slurm_tasks_joined()
