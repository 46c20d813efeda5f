"""The cross-validation picture of `vl-report`: the objective against the one hyperparameter a sweep varied."""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import read_metrics, run_cli
from tests.selection.test_sweep_report import make_run
from tests.selection.test_sweeps import KNN
from visionlab.reporting import visuals
from visionlab.reporting.sweep_curve import IMAGE_TAG, PICTURE_FILE, picture, sweep_curve
from visionlab.reporting.sweep_report import build_report, write_report

VL_REPORT = Path(sys.executable).parent / "vl-report"
KFOLD = ["split=kfold", "split.folds=3"]


def colour_at(image, point: tuple[float, float]) -> str:
    x, y = round(point[0]), round(point[1])
    return "#" + bytes(image[:, y, x].tolist()).hex()


def check_files(root: Path, curve) -> None:
    """The PNG is the picture of the curve, and TensorBoard has the same image under the report's tag."""
    image, points = picture(curve)
    png = Image.open(root / PICTURE_FILE)
    assert png.size == (image.shape[2], image.shape[1]) and png.size[0] >= 500 and png.size[1] >= 300
    assert [colour_at(image, p) for p in points.line] == [visuals.LINE] * len(curve.labels)
    events = EventAccumulator(str(root), size_guidance={"images": 0})
    events.Reload()
    (logged,) = events.Images(IMAGE_TAG)
    assert (logged.width, logged.height) == png.size


def test_accuracy_against_k_of_a_kfold_sweep_and_of_one_run_with_a_list_of_k_agree(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *KNN, *KFOLD, "model.k=1,3,5", f"hydra.sweep.dir={sweep}"], sweep)
    assert result.returncode == 0, result.stderr
    assert f"picture of val/acc against model.k: {sweep / PICTURE_FILE}" in result.stdout  # the multirun's own report
    (sweep / PICTURE_FILE).unlink()
    report = subprocess.run([str(VL_REPORT), str(sweep)], capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr

    jobs = [read_metrics(sweep / str(job)) for job in range(3)]
    curve = sweep_curve(build_report(sweep))
    assert (curve.parameter, curve.objective, curve.labels, curve.x) == (
        "model.k",
        "val/acc",
        ["1", "3", "5"],
        [1.0, 3.0, 5.0],
    )
    assert curve.mean == [job["val/acc"] for job in jobs] == [job["cv/val_acc_mean"] for job in jobs]
    assert curve.std == pytest.approx([job["cv/val_acc_std"] for job in jobs])
    assert curve.folds == [[job[f"cv/fold_{i}/val_acc"] for i in range(3)] for job in jobs]
    assert not curve.log_x and curve.fold_count == 3
    check_files(sweep, curve)

    one = tmp_path / "one"
    assert run_cli([*KNN, *KFOLD, "model.k=[1,3,5]"], one).returncode == 0
    assert subprocess.run([str(VL_REPORT), str(one)], capture_output=True, timeout=120).returncode == 0
    from_list = sweep_curve(build_report(one))
    metrics = read_metrics(one)
    assert from_list.mean == [metrics[f"val/acc@{k}"] for k in (1, 3, 5)]
    assert from_list.folds == [[metrics[f"cv/fold_{i}/val_acc@{k}"] for i in range(3)] for k in (1, 3, 5)]
    assert from_list.folds == curve.folds  # each k on each fold: the same search, whichever way it ran
    assert from_list.std == pytest.approx([statistics.pstdev(folds) for folds in curve.folds])
    check_files(one, from_list)


def test_a_holdout_sweep_over_a_learning_rate_gets_a_log_axis_and_no_band(tmp_path):
    for job, (lr, acc) in enumerate([("0.1", 0.3), ("0.001", 0.5), ("0.01", 0.8)]):
        make_run(tmp_path / str(job), ["model=mlp", f"optimizer.lr={lr}"], {"val/acc": acc})
    make_run(tmp_path / "3", ["model=mlp", "optimizer.lr=0.0001"], None)  # failed: not a point
    report = write_report(tmp_path)
    curve = sweep_curve(report)
    assert (curve.labels, curve.mean, curve.std, curve.folds) == (
        ["0.001", "0.01", "0.1"],
        [0.5, 0.8, 0.3],
        [None] * 3,
        [[]] * 3,
    )
    assert curve.log_x and curve.numeric
    image, points = picture(curve)
    xs = [x for x, _ in points.line]
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=1)  # a decade apart each: evenly spaced
    assert points.line[1][1] < points.line[0][1] < points.line[2][1]  # 0.8 highest, 0.3 lowest
    band = visuals.BAND.lower()
    assert band not in {
        colour_at(image, (x, y)) for x in range(0, image.shape[2], 3) for y in range(0, image.shape[1], 3)
    }
    check_files(tmp_path, curve)


def test_choices_are_spaced_evenly_and_two_varied_keys_draw_nothing(tmp_path):
    choices, two = tmp_path / "choices", tmp_path / "two"
    for job, (optimizer, acc) in enumerate([("sgd", 0.6), ("adam", 0.7), ("adamw", 0.65)]):
        make_run(choices / str(job), [f"optimizer={optimizer}"], {"val/acc": acc})
        make_run(two / str(job), [f"optimizer={optimizer}", f"optimizer.lr=0.{job + 1}"], {"val/acc": acc})
    curve = sweep_curve(build_report(choices))
    assert (curve.labels, curve.x, curve.mean, curve.numeric) == (
        ["adam", "adamw", "sgd"],
        [0.0, 1.0, 2.0],
        [0.7, 0.65, 0.6],
        False,
    )
    write_report(two)
    assert sweep_curve(build_report(two)) is None and not (two / PICTURE_FILE).exists()
