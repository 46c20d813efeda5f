"""Console entry points. Thin: launch.py runs what `vl-train` asks, as it runs `visionlab.train` (api.py).

Every way a command can fail ends in one line on stderr and the exit code of docs/architecture.md, "Exit codes":
2 for bad config or input, 3 for a diverged run, 75 for a write that found the disk full (free space,
then resume=), 128+n for signal n, 1 for a bug (whose traceback goes to the run's log file, not the terminal).
"""

from __future__ import annotations

from visionlab import cores

cores.quiet_idle_threads()  # before anything below loads torch, whose OpenMP runtime reads it once

import argparse
import logging
import sys
from pathlib import Path
from typing import NoReturn

from rich.table import Table

from visionlab import launch, patches, terminal
from visionlab.config import OBJECTIVES
from visionlab.config_errors import one_line
from visionlab.console import ConsoleHandler, console, error_console
from visionlab.errors import DiskFull, UserError
from visionlab.reporting import sweep_report
from visionlab.trust import split_config_dirs


def train() -> NoReturn:
    """`vl-train`: one run, or a sweep with -m."""
    terminal.install()
    try:
        launch.compose_and_run(sys.argv[1:])
        code = 0
    except (launch.JobEnded, launch.JobFailed) as exc:  # the job has said why
        code = exc.exit_code
    except (UserError, launch.NodeEnded) as exc:
        say_error(str(exc))
        code = exc.exit_code
    except DiskFull as exc:  # before the run started: Hydra's first writes
        say_error(exc.line(exc.folder))
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:  # Hydra's own --help, --cfg and usage errors
        code = exc.code
    patches.exit_without_teardown(code, launch.session.single_run)


def say_error(line: str) -> None:
    error_console.print(f"error: {line}", markup=False, highlight=False, soft_wrap=True)


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
        say_error(one_line(exc))
        sys.exit(2)
    except DiskFull as exc:  # a features cache, or the report
        say_error(f"{exc}: free some space and run again")
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
        if which not in ("last", "best"):  # evaluation.CHECKPOINT_CHOICES, without loading torch for a usage error
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
        say_error(one_line(exc))
        sys.exit(2)
