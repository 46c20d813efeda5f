"""The cross-validation picture: a sweep's objective against the one hyperparameter it varied.

The course's "accuracy against k": one point per value (the mean over its runs), a band of ± the
standard deviation over the k-fold folds, and each fold's value as a dot. A report of one kNN run
given several k draws its accuracy for each k instead (`KChoice`, with each fold's of a
k-fold run). Holdout runs have no folds: the points and the line only. `vl-report` (and every
multirun's report) writes it beside summary.csv as a PNG and as a TensorBoard image.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from visionlab.training.learners.knn_choice import KChoice

if TYPE_CHECKING:
    from visionlab.reporting.sweep_report import Run, SweepReport

PICTURE_FILE = "objective_curve.png"
IMAGE_TAG = "sweep/objective_curve"
EVENTS_SUFFIX = ".objective_curve"  # the report's own event file, replaced on each report
LOG_X_FROM = 100  # positive values spanning this factor or more go on a log axis (learning rates, weight decays)


@dataclass
class Curve:
    parameter: str  # the x axis: an override's key, or `model.k` for one kNN run's accuracy by k
    objective: str  # the y axis
    labels: list[str]  # each point's value, as the runs' overrides spell it
    x: list[float]  # each point's place on the x axis: the number, or its rank among choices
    mean: list[float]
    std: list[float | None]  # over the point's folds; None: no folds (holdout)
    folds: list[list[float]]  # the point's fold values ([] without folds)
    log_x: bool
    numeric: bool  # False: choices, evenly spaced in order

    @property
    def fold_count(self) -> int:
        return max(len(values) for values in self.folds)


def sweep_curve(report: SweepReport) -> Curve | None:
    """The curve of a report over one varied hyperparameter, or of its one kNN run with several k; else None."""
    done = [run for run in report.runs if report.value(run) is not None]
    if len(report.columns) == 1:
        parameter = report.columns[0]
        groups: dict[str, list[Run]] = {}
        for run in done:
            groups.setdefault(run.overrides[parameter], []).append(run)
        if len(groups) > 1:
            points = {
                label: (
                    [report.value(run) for run in runs],
                    [v for run in runs for v in fold_values(run.metrics, report.objective)],
                )
                for label, runs in groups.items()
            }
            return make_curve(parameter, report.objective, points)
    if len(report.runs) == 1 and done:
        metrics = done[0].metrics
        choice = KChoice.of(metrics)
        if choice is not None and len(choice.accuracy) > 1:
            points = {str(k): ([metrics[tag]], fold_values(metrics, tag)) for k, tag in choice.tags().items()}
            return make_curve("model.k", "val/acc", points)
    return None


def fold_values(metrics: dict[str, Any], tag: str) -> list[float]:
    """A k-fold run's value of `tag` on each fold (`cv/fold_<i>/val_acc` for val/acc, ...); [] for other runs."""
    name = tag.replace("/", "_")
    folds = sorted(
        (int(m[1]), value)
        for key, value in metrics.items()
        if (m := re.fullmatch(r"cv/fold_(\d+)/(.+)", key)) and m[2] == name and value is not None
    )
    return [value for _, value in folds]


def make_curve(parameter: str, objective: str, points: dict[str, tuple[list[float], list[float]]]) -> Curve:
    """Points by label: (the runs' values, their folds' values), placed by number when every label is one."""
    numbers = [as_number(label) for label in points]
    numeric = None not in numbers
    order = sorted(points, key=lambda label: as_number(label) if numeric else natural(label))
    x = [as_number(label) for label in order] if numeric else [float(i) for i in range(len(order))]
    log_x = numeric and min(x) > 0 and max(x) / min(x) >= LOG_X_FROM
    folds = [points[label][1] for label in order]
    return Curve(
        parameter,
        objective,
        order,
        x,
        [statistics.fmean(points[label][0]) for label in order],
        [statistics.pstdev(values) if values else None for values in folds],
        folds,
        log_x,
        numeric,
    )


def as_number(label: str) -> float | None:
    try:
        return float(label)
    except ValueError:
        return None


def natural(label: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", label)]


def picture(curve: Curve) -> tuple[Any, Any]:
    """The curve drawn (uint8 `[3, H, W]`) and where its points went (`visuals.ChartPoints`)."""
    from visionlab.reporting import visuals  # torch and Pillow: only a report with a curve loads them

    folds = curve.fold_count
    what = f"mean ± std over {folds} folds, dots: each fold" if folds else "one run per point (no folds: no band)"
    shown = len(curve.labels) <= 12 or not curve.numeric  # every value named under its point
    return visuals.line_chart(
        curve.x,
        curve.mean,
        band=curve.std,
        dots=curve.folds,
        log_x=curve.log_x,
        x_ticks=list(zip(curve.x, curve.labels)) if shown else (),
        title=f"{curve.objective} against {curve.parameter}: {what}",
        x_label=curve.parameter,
        y_label=curve.objective,
    )


def write_curve(report: SweepReport) -> Curve | None:
    """The report's curve, drawn as a PNG beside summary.csv and as a TensorBoard image in its folder
    (None: it has none)."""
    curve = sweep_curve(report)
    if curve is None:
        return None
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter

    image, _ = picture(curve)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(report.root / PICTURE_FILE)
    for old in report.root.glob(f"events.out.tfevents.*{EVENTS_SUFFIX}"):  # one curve per folder, the latest
        old.unlink()
    with SummaryWriter(str(report.root), filename_suffix=EVENTS_SUFFIX) as writer:
        writer.add_image(IMAGE_TAG, image, 0)
    return curve
