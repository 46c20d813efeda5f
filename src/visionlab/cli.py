"""Console entry points. Thin: Hydra composes the config, `experiment.run` does the work.

Every way a command can fail ends in one line on stderr and the exit code of docs/architecture.md, "Exit codes":
2 for bad config or input, 3 for a diverged run, 75 for a write that found the disk full (free space,
then resume=), 128+n for signal n, 1 for a bug (whose traceback goes to the run's log file, not the terminal).
"""

from __future__ import annotations

from visionlab import cores

cores.quiet_idle_threads()  # before anything below loads torch, whose OpenMP runtime reads it once

import argparse
import logging
import os
import re
import sys
from pathlib import Path
from typing import NoReturn

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.table import Table

from visionlab import patches, run_folder, terminal
from visionlab.config import OBJECTIVES
from visionlab.console import ConsoleHandler, RunLogFile, console, error_console
from visionlab.errors import DiskFull, RunStopped, UserError, no_space, quiet_full_disk_in_threads, writing
from visionlab.parallel_jobs import label_parallel_job
from visionlab.paths import config_dir
from visionlab.reporting import sweep_report
from visionlab.suggest import did_you_mean
from visionlab.training.resume import is_hydra_setting, resume_arguments
from visionlab.trust import split_config_dirs

CONF_DIR = str(config_dir())
log = logging.getLogger("visionlab")
run_folder.register_resolver()  # here, at import: a launcher's worker process imports this module for _train_job
# Importing optuna (a search's plugin, found by Hydra; a pruned trial's job) imports alembic, which logs a line per
# plugin it sets up: seven lines of "setup plugin alembic..." before a search's first.
logging.getLogger("alembic").setLevel(logging.WARNING)


# Hydra's ValueError for two of its modes at once (vl-train -m --cfg)
HYDRA_MODES_CLASH = "Only one of --run, --multirun"
_SINGLE_RUN = False  # set once a single run (not a sweep) has started: see patches.exit_without_teardown


class JobFailed(Exception):
    """A job ended badly and has said why in its log; this carries its exit code out of Hydra."""

    def __init__(self, exit_code: int):
        super().__init__(f"exit code {exit_code}")
        self.exit_code = exit_code


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def _train_job(cfg: DictConfig) -> float:
    from visionlab import experiment  # data, models and training load only once the config has composed

    terminal.install()  # again for a job in a launcher's worker process
    quiet_full_disk_in_threads()
    label_parallel_job()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    global _SINGLE_RUN
    _SINGLE_RUN = HydraConfig.get().mode == RunMode.RUN
    try:
        with writing(run_dir, "the run's files"):
            metrics = experiment.run(cfg, run_dir)
    except UserError as exc:
        log.error("error: %s", exc)
        end_job(exc.exit_code)
    except DiskFull as exc:  # wherever the write was: training saved what it could (experiment.run)
        log.error("error: %s", exc.line(run_dir))
        end_job(exc.exit_code)
    except RunStopped as exc:  # already said, and saved, by experiment.run
        end_job(exc.exit_code)
    except Exception as exc:
        log.error("unexpected error", exc_info=True, extra={"file_only": True})
        log.error(
            "error: unexpected %s: %s (a bug: the traceback is in %s)", type(exc).__name__, exc, run_dir / "train.log"
        )
        end_job(1)
    return float(metrics.get(cfg.objective) or "nan")  # lr_find=true has no objective


def end_job(exit_code: int) -> NoReturn:
    """A single run exits now; a sweep's job fails and the sweep goes on, unless a signal stopped it."""
    if HydraConfig.get().mode == RunMode.MULTIRUN and exit_code < 128:
        raise JobFailed(exit_code) from None
    sys.exit(exit_code)


def train() -> NoReturn:
    """`vl-train`: one run, or a sweep with -m."""
    terminal.install()
    try:
        _train()
    except SystemExit as exc:
        patches.exit_without_teardown(exc.code, _SINGLE_RUN)
    patches.exit_without_teardown(0, _SINGLE_RUN)


def _train() -> None:
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra raises instead of printing; we print one line
    patches.skip_hydra_mode_compose()
    try:
        sys.argv[1:] = resume_arguments(options_first(sys.argv[1:]))
        _train_job()
    except JobFailed as exc:
        sys.exit(exc.exit_code)
    except (UserError, HydraException, OmegaConfBaseException, OSError) as exc:
        refuse(exc)
    except ValueError as exc:
        # logging.config's wrapping of what run_folder.RunLog refused
        if isinstance(exc.__cause__, (UserError, OSError)):
            refuse(exc.__cause__)
        if not str(exc).startswith(HYDRA_MODES_CLASH):  # only Hydra's check of its own flags is a user's mistake
            raise
        error_console.print(
            f"error: {exc}: -m with --cfg or --info is refused; drop -m to see the config one job composes",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def full_before_the_run(exc: BaseException) -> str:
    """No space for Hydra's own first writes (.hydra/, the folder's lock), said as a full disk in training is.
    Hydra has forgotten its config by now; the run's log file, opened just before, still names the run
    directory, else the write that failed does."""
    logs = [Path(h.baseFilename) for h in logging.getLogger().handlers if isinstance(h, RunLogFile)]
    run_dir = logs[0].parent if logs else Path(getattr(exc, "filename", None) or Path.cwd())
    return DiskFull(run_dir, "the run's config (.hydra/)" if logs else "the run's files").line(run_dir)


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


def refuse(exc: BaseException) -> NoReturn:
    """Exit 75 for a disk full before the run started, else exit 2 with the one line that says what to change."""
    if no_space(exc):
        error_console.print(f"error: {full_before_the_run(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(DiskFull.exit_code)
    error_console.print(f"error: {one_line(exc, sys.argv[1:])}", markup=False, highlight=False, soft_wrap=True)
    sys.exit(2)


def one_line(exc: BaseException, args: list[str] = ()) -> str:
    """Hydra's and OmegaConf's messages span lines (and hint at HYDRA_FULL_ERROR): keep what matters.

    With vl-train's arguments, a misspelled key, group or option also gets the closest name that exists.
    """
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot write {exc.filename} ({exc.strerror}): choose another folder, e.g. hydra.run.dir=/tmp/run"
    text = str(exc)
    if key := re.search(r"Could not override '([^']+)'", text):
        hint = did_you_mean(key[1], known_keys(args, key[1]), f"{{}}={given_value(args, key[1])}") if args else ""
        advice = hint or "check its spelling against conf/"
        return f"{key[1]} is not a key of the config: {advice} (to add a new key, write +{key[1]}=...)"
    if key := re.search(r"Could not delete from config. '([^']+)' does not exist", text):
        hint = did_you_mean(key[1], known_keys(args, key[1]), "~{}") if args else ""
        return f"~{key[1]}: {key[1]} is not a key of the config: {hint or 'check its spelling against conf/'}"
    if missing := re.search(r"Could not find '([^']+)/([^']+)'", text):
        listed = text.split("Available options in", 1)[1].split("Config search path", 1)[0].splitlines()[1:]
        options = [o.strip() for o in listed if o.strip()]
        hint = did_you_mean(missing[2], options, f"{missing[1]}={{}}")
        choices = f"use one of {', '.join(options)}"
        advice = f"{hint} ({choices})" if hint else choices
        return f"{missing[1]}={missing[2]} is not an option of conf/{missing[1]}/: {advice}"
    text = re.sub(r",? ?set env var HYDRA_FULL_ERROR=1 to see chained exception\.?", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    return "; ".join(lines)


def given_value(args: list[str], key: str) -> str:
    """The value an override gave `key` (`trainer.epcohs=3` -> 3)."""
    return next((a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+~") == key), "...")


def known_keys(args: list[str], failed: str) -> list[str]:
    """Every group and every dotted key of the config that vl-train's other arguments compose (of the default
    config where they fail too): the names a misspelled one is compared with."""
    dirs = [CONF_DIR, *(str(Path(d).expanduser().resolve()) for d in split_config_dirs(args)[0])]
    name = next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config-name", "-cn")), "train")
    others = [
        a
        for a in args
        if "=" in a and not a.startswith("-") and not is_hydra_setting(a) and a.split("=", 1)[0].lstrip("+~") != failed
    ]
    searchpath = f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs[1:])}]"
    groups = [
        entry.name for folder in map(Path, dirs) if folder.is_dir() for entry in folder.iterdir() if entry.is_dir()
    ]
    for overrides in (others, []):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                composed = compose(config_name=name, overrides=[*overrides, searchpath])
        except Exception:  # another bad override, or an unknown config name: try the defaults
            continue
        return groups + dotted_keys(OmegaConf.to_container(composed, resolve=False))
    return groups


def dotted_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += dotted_keys(value, f"{prefix}{key}.")
    return keys


EVAL_USAGE = """usage: vl-eval PATH [split=test|val|train] [--checkpoint last|best] [--config-dir DIR] [key=value ...]

Score a saved model on one split of its own data, rebuilt from the checkpoint's config (the same seed, split and
features): accuracy, mean loss, per-class accuracy and the confusion matrix. Prints them, and writes them to
eval_<checkpoint>_<split>.json beside the checkpoint (best.pt on test: eval_best_test.json).

  PATH                    which weights: a run's best.pt (its best epoch by the objective)
                          or last.pt (its last epoch); a run directory: the checkpoint that took its test
  --checkpoint last|best  with a run directory: that file of it instead
  split=                  test (the default), val or train
  key=value               changes the stored config: dataset.root=/data on another machine, trainer.tta=flip
  --config-dir DIR        your own configs, whose classes it may build"""
CHECKPOINT_CHOICES = ("last", "best")


def evaluate() -> None:
    """`vl-eval`: score a saved model on one split; prints the metrics and writes them as JSON."""
    terminal.install()
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help"):
        print(EVAL_USAGE)
        sys.exit(0 if args else 2)
    from visionlab import evaluation

    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[ConsoleHandler()])
    try:
        which, args = split_checkpoint_choice(args)
        config_dirs, rest = split_config_dirs(args)
        if not rest:
            raise UserError(f"no checkpoint or run directory given: {EVAL_USAGE.removeprefix('usage: ')}")
        split = next((a.split("=", 1)[1] for a in rest[1:] if a.startswith("split=")), "test")
        overrides = [a for a in rest[1:] if not a.startswith("split=")]
        metrics = evaluation.evaluate_checkpoint(Path(rest[0]), split, overrides, config_dirs, which)
        written = evaluation.write_report(metrics)
    except (UserError, OSError) as exc:
        error_console.print(f"error: {one_line(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    except DiskFull as exc:  # a features cache, or the report
        error_console.print(
            f"error: {exc}: free some space and run again", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)
    console.print(evaluation_table(metrics))
    console.print(f"written to {written}", markup=False, highlight=False)


def split_checkpoint_choice(args: list[str]) -> tuple[str | None, list[str]]:
    """`--checkpoint last|best` (or `--checkpoint=...`) taken out of `args`: which file of a run directory to load."""
    which, rest, given = None, [], iter(args)
    for arg in given:
        name, sep, value = arg.partition("=")
        if name != "--checkpoint":
            rest.append(arg)
            continue
        which = value if sep else next(given, "")
        if which not in CHECKPOINT_CHOICES:
            raise UserError(f"--checkpoint {which!r} is unknown: use last or best")
    return which, rest


def evaluation_table(metrics: dict) -> Table:
    split = metrics["split"]
    table = Table(title=f"{metrics['checkpoint']} on {split}", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in (f"{split}/acc", f"{split}/loss"):
        table.add_row(key, "n/a" if metrics[key] is None else f"{metrics[key]:.4f}")
    for name, acc in metrics["per_class_acc"].items():
        table.add_row(f"{split}/per_class_acc/{name}", f"{acc:.4f}")
    return table


def report() -> None:
    """`vl-report`: every run under PATH in one table, best first; writes PATH/summary.csv."""
    terminal.install()
    parser = argparse.ArgumentParser(
        prog="vl-report", description="Every run under PATH in one table, best first; writes PATH/summary.csv."
    )
    parser.add_argument("path", type=Path, help="a sweep directory (outputs/multirun/<date>/<time>), or outputs/")
    parser.add_argument(
        "--objective", choices=OBJECTIVES, help="rank by this metric (default: the runs' own objective)"
    )
    args = parser.parse_args()  # a bad argument: usage and exit code 2
    try:
        sweep_report.write_report(args.path, args.objective)
    except (UserError, OSError) as exc:
        error_console.print(f"error: {one_line(exc)}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(2)
