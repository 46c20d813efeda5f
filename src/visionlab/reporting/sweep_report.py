"""The sweep report: every run under a folder in one table, best first, and summary.csv beside it.

A run is a folder with a metrics.json or a `.hydra/` (a job that failed before writing its
metrics has only the latter). The columns are the command-line overrides that differ between
the runs, so a sweep's table shows exactly what it varied. Runs are ranked by their objective
(higher is better for accuracies, lower for losses); test numbers stay out of the table, since
choosing by them would spend the test set. `vl-report` prints it, and so does every multirun
when it ends (`SweepReportCallback`). A sweep over one hyperparameter also gets its picture, the
objective against it (`sweep_curve`).

The report of an Optuna sweep ranks every trial of its study, read from the study's storage
(`study_trials`), wherever its run directory is: a study resumed into a new sweep folder has
its earlier trials in the old one, and a trial whose folder is gone still gets a row.
"""

from __future__ import annotations

import atexit
import csv
import logging
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table

from visionlab.console import console
from visionlab.errors import UserError
from visionlab.objective import DIRECTIONS, maximized
from visionlab.reporting import study_trials
from visionlab.reporting.sweep_curve import PICTURE_FILE, write_curve

log = logging.getLogger("visionlab")

SUMMARY_FILE = "summary.csv"
BEST_COMMAND_FILE = "best_command.txt"  # the command that retrains the best run (`retrain_command`)
DEFAULT_OBJECTIVE = "val/acc"


@dataclass
class Run:
    run_dir: Path | None  # None: an Optuna trial that recorded none
    overrides: dict[str, str]
    objective: str | None  # as configured for the run (None: no .hydra/config.yaml)
    metrics: dict[str, Any] = field(default_factory=dict)  # empty: no metrics.json
    trial: int | None = None  # its number in the Optuna study of the report

    @property
    def on_disk(self) -> bool:
        return self.run_dir is not None and self.run_dir.is_dir()

    @property
    def status(self) -> str:
        return self.metrics.get("status", "failed")  # a job that died before metrics.json: its train.log says why


@dataclass
class SweepReport:
    root: Path
    objective: str
    runs: list[Run]  # best first; runs without a value of the objective last, in job order
    columns: list[str]  # the overrides that differ between runs
    study: str | None = None  # the Optuna study whose trials these are (with the other runs under root)

    def value(self, run: Run) -> float | None:
        """The objective a run is ranked by: completed runs only."""
        return run.metrics.get(self.objective) if run.status == "completed" else None

    def shown(self, run: Run) -> float | None:
        """The objective in the table: a pruned trial's is its last epoch's, shown but not ranked."""
        return run.metrics.get(self.objective) if run.status in ("completed", "pruned") else None

    @property
    def best(self) -> Run | None:
        return self.runs[0] if self.runs and self.value(self.runs[0]) is not None else None

    @property
    def failed(self) -> list[Run]:
        return [run for run in self.runs if run.status == "failed" and run.on_disk]  # a train.log says why

    def table(self) -> Table:
        has_cv = any("cv/val_acc_mean" in run.metrics for run in self.runs)
        what = f": the trials of Optuna study {self.study} and the runs" if self.study else ""
        table = Table(title=f"{len(self.runs)} runs{what} under {self.root}, best {self.objective} first")
        trial = ["trial"] if self.study else []
        for name in [
            "",
            *trial,
            *self.columns,
            self.objective,
            *(["cv mean ± std"] if has_cv else []),
            "status",
            "run directory",
        ]:
            table.add_column(name, justify="right" if name in (self.objective, "cv mean ± std", "trial") else "left")
        for run in self.runs:
            value = self.shown(run)
            cells = [
                "best" if run is self.best else "",
                *(["" if run.trial is None else str(run.trial)] if self.study else []),
            ]
            cells += [short(run.overrides.get(key, "")) for key in self.columns]
            cells.append("" if value is None else f"{value:.4f}")
            if has_cv:
                mean, std = run.metrics.get("cv/val_acc_mean"), run.metrics.get("cv/val_acc_std")
                cells.append("" if mean is None else f"{mean:.4f} ± {std:.4f}")
            cells += [run.status, self.location(run)]
            table.add_row(*cells, style="bold green" if run is self.best else None)
        return table

    def write_csv(self, path: Path) -> None:
        """One row per run in the table's order: best (1 or 0), the overrides, status, then every metric."""
        metric_keys = list(dict.fromkeys(key for run in self.runs for key in run.metrics if key != "status"))
        with open(path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["rank", "best", *(["trial"] if self.study else []), "run_dir", *self.columns, "status", *metric_keys]
            )
            for rank, run in enumerate(self.runs, 1):
                writer.writerow(
                    [
                        rank,
                        int(run is self.best),
                        *([run.trial] if self.study else []),
                        self.location(run),
                        *(run.overrides.get(key, "") for key in self.columns),
                        run.status,
                        *("" if run.metrics.get(key) is None else run.metrics[key] for key in metric_keys),
                    ]
                )

    def location(self, run: Run) -> str:
        """The run directory: relative to root when under it, else as the study recorded it (absolute)."""
        if run.run_dir is None:
            return "(not recorded)"
        if not run.run_dir.is_dir():
            return f"{run.run_dir} (missing)"
        return str(run.run_dir.relative_to(self.root) if run.run_dir.is_relative_to(self.root) else run.run_dir)


def short(value: str) -> str:
    """A number as 4 significant digits (an Optuna trial's lr has 17), anything else as it is."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() else f"{number:.4g}"


def find_runs(root: Path) -> list[Run]:
    """Every run under `root`, in job order (folders compared number by number: 2 before 10)."""
    folders = {p.parent for p in root.rglob("metrics.json")} | {
        p.parent.parent for p in root.rglob(".hydra/overrides.yaml")
    }
    return [read_run(folder) for folder in sorted(folders, key=natural_key)]


def natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def read_run(run_dir: Path) -> Run:
    hydra_dir = run_dir / ".hydra"
    overrides = _yaml(hydra_dir / "overrides.yaml") or []
    config = _yaml(hydra_dir / "config.yaml") or {}
    metrics = _yaml(run_dir / "metrics.json") or {}  # JSON is YAML
    return Run(run_dir, dict(o.split("=", 1) for o in overrides if "=" in o), config.get("objective"), metrics)


def _yaml(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise UserError(
            f"{path} cannot be read ({exc.problem}): is it half written, or not a visionlab run file?"
        ) from None


def study_runs(study: study_trials.Study, folder_runs: list[Run]) -> list[Run]:
    """The study's trials in number order, each as the run in its folder where that is on disk, then
    the runs among `folder_runs` that are no trial of the study."""
    trials = study_trials.trials_of(study)
    unclaimed = {run.run_dir.resolve(): run for run in folder_runs}
    recorded = {trial.run_dir.resolve() for trial in trials if trial.run_dir is not None}
    unrecorded = {trial.number: trial for trial in trials if trial.run_dir is None}
    for path, run in unclaimed.items():
        if unrecorded and path not in recorded:
            name, number = study_trials.job_of(run.run_dir)
            if name == study.name and number in unrecorded:  # job N is trial N
                unrecorded.pop(number).run_dir = run.run_dir
    objective = study.objective or next((run.objective for run in folder_runs if run.objective), DEFAULT_OBJECTIVE)
    runs = []
    for trial in trials:
        if trial.run_dir is not None and trial.run_dir.is_dir():
            run = unclaimed.pop(trial.run_dir.resolve(), None) or read_run(trial.run_dir)
        else:  # what the study knows of it
            metrics = {"status": trial.status, **({} if trial.value is None else {objective: trial.value})}
            run = Run(trial.run_dir, trial.params, objective, metrics)
        run.trial = trial.number
        runs.append(run)
    return runs + list(unclaimed.values())


def build_report(root: Path, objective: str | None = None) -> SweepReport:
    if not root.is_dir():
        raise UserError(f"{root} is not a folder: give a sweep directory (outputs/multirun/<date>/<time>) or outputs/")
    runs = find_runs(root)
    study = study_trials.sweep_study(root)
    if study is not None:
        runs = study_runs(study, runs)
    if not runs:
        raise UserError(f"{root} holds no runs: no metrics.json and no .hydra/ below it")
    if objective is None:
        configured = sorted({run.objective for run in runs if run.objective})
        if len(configured) > 1:
            raise UserError(
                f"the runs under {root} have different objectives ({', '.join(configured)}): choose one with "
                "--objective"
            )
        objective = configured[0] if configured else DEFAULT_OBJECTIVE
    columns = [
        key
        for key in dict.fromkeys(
            k for run in runs for k in run.overrides
        )  # a trial without its folder knows only its params
        if len({run.overrides.get(key) for run in runs if key in run.overrides or run.on_disk}) > 1
    ]
    report = SweepReport(root, objective, runs, columns, study.name if study else None)
    if objective not in DIRECTIONS:  # a run folder's config from elsewhere may name anything
        raise UserError(
            f"the runs under {root} are judged by {objective}, which is none of {', '.join(DIRECTIONS)}: "
            "choose one with --objective"
        )
    ranked = sorted(
        (r for r in runs if report.value(r) is not None), key=lambda r: report.value(r), reverse=maximized(objective)
    )
    report.runs = ranked + [r for r in runs if report.value(r) is None]
    return report


def write_report(root: Path, objective: str | None = None) -> SweepReport:
    """Print the table and write `root/summary.csv`."""
    report = build_report(root, objective)
    table = report.table()
    if console.is_terminal:
        console.print(table)
    else:  # a log file or a pipe gets whole cells, however wide
        natural_width = Measurement.get(console, console.options.update_width(10_000), table).maximum
        Console(width=max(console.width, natural_width)).print(table)
    report.write_csv(root / SUMMARY_FILE)
    curve = write_curve(report)
    if (best := report.best) is not None:
        trial = "" if best.trial is None else f" (trial {best.trial} of study {report.study})"
        where = best.run_dir if best.on_disk else report.location(best)
        console.print(
            f"best {report.objective}: {report.value(best):.4f}{trial} in {where}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if (command := retrain_command(report)) is not None:
        (root / BEST_COMMAND_FILE).write_text(command + "\n")
        console.print(
            f"retrain the best: {command} (also in {root / BEST_COMMAND_FILE})",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if report.failed:
        where = ", ".join(report.location(run) for run in report.failed)
        console.print(
            f"{len(report.failed)} run(s) failed before writing metrics.json; see train.log in: {where}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(f"summary: {root / SUMMARY_FILE}", markup=False, highlight=False, soft_wrap=True)
    if curve is not None:
        console.print(
            f"picture of {curve.objective} against {curve.parameter}: {root / PICTURE_FILE}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    return report


def retrain_command(report: SweepReport) -> str | None:
    """The `vl-train` line that trains the best run again, as one run: its overrides, those of its sweep included
    (an Optuna search's `hparams_search=` picks its model; the search itself needs -m), without `resume=`."""
    best = report.best
    if best is None or not (best.run_dir / ".hydra" / "overrides.yaml").is_file():
        return None
    overrides = _yaml(best.run_dir / ".hydra" / "overrides.yaml") or []
    return shlex.join(["vl-train", *(o for o in overrides if not o.startswith(("resume=", "hydra.")))])


class SweepReportCallback(Callback):
    """Hydra callback: the sweep report when a multirun ends, also when a failed job or Ctrl-C cut it short.

    Hydra calls `on_multirun_end` only after a sweep whose jobs all succeeded, so the report is
    also registered to run at exit; whichever comes first writes it.
    """

    refused = False  # the sweep was refused before it began (its folder may hold another search's results): no report

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(config.hydra.sweep.dir)
        atexit.register(self.report)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.report()
        atexit.unregister(self.report)  # a notebook's process lives on after the sweep (visionlab.sweep)

    def report(self) -> None:
        sweep_dir, self.sweep_dir = self.sweep_dir, None
        if sweep_dir is None or not sweep_dir.is_dir() or SweepReportCallback.refused:
            return
        try:
            write_report(sweep_dir)
        except (UserError, OSError) as exc:  # the sweep's own results stand; only the report is missing
            log.warning("sweep report: %s", exc)
