"""`vl-eval` rebuilds a model from its checkpoint alone and scores it exactly as the run did."""

from __future__ import annotations

import json
import subprocess

import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, read_metrics, run_cli, run_tool

VL_EVAL, VL_PREDICT = "vl-eval", "vl-predict"
# Four epochs at a learning rate high enough that val/acc peaks at epoch 3 of TINY's synthetic data, tested on best.pt.
BEST_BEFORE_LAST = [*TINY, "model=linear", "trainer.epochs=4", "optimizer.lr=0.5", "trainer.test_on=best"]


def cli(command, *args, cwd) -> subprocess.CompletedProcess:
    return run_tool(command, list(args), cwd, timeout=120)


@pytest.mark.parametrize("model", ["cnn", "knn"])
def test_vl_eval_reproduces_the_runs_test_accuracy(tmp_path, model):
    run_dir = tmp_path / "run"
    extra = ["model.k=[1,3]"] if model == "knn" else []
    assert run_cli([*TINY, f"model={model}", *extra], run_dir).returncode == 0
    run = read_metrics(run_dir)

    result = cli(VL_EVAL, run_dir, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tested = "best" if model == "cnn" else "last"  # the cnn recipe stops early, so its best epoch takes the test
    assert f"checkpoint: {run_dir / tested}.pt (" in result.stdout
    report = json.loads((run_dir / f"eval_{tested}_test.json").read_text())
    assert report["test/acc"] == run["test/acc"]
    if model == "cnn":
        assert report["test/loss"] == pytest.approx(run["test/loss"], rel=1e-6)
    assert f"{run['test/acc']:.4f}" in result.stdout
    confusion = report["confusion_matrix"]
    assert len(confusion) == 10 and sum(map(sum, confusion)) == 200  # TINY's 200 test images
    assert sum(confusion[i][i] for i in range(10)) == round(run["test/acc"] * 200)
    assert set(report["per_class_acc"]) == set(report["classes"])


def test_best_pt_is_the_epoch_with_the_best_val_accuracy(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "model=linear", "trainer.epochs=4", "optimizer.lr=0.05"], run_dir).returncode == 0
    result = cli(VL_EVAL, run_dir / "best.pt", "split=val", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "eval_best_val.json").read_text())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    per_epoch = [e.value for e in events.Scalars("val/acc")]
    assert len(per_epoch) == 4
    assert report["split"] == "val" and report["val/acc"] == pytest.approx(max(per_epoch), abs=1e-6)


def test_a_run_directory_is_scored_with_the_weights_that_took_its_test(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli(BEST_BEFORE_LAST, run_dir).returncode == 0
    run = read_metrics(run_dir)
    assert (run["tested_epoch"], run["epochs"]) == (3, 4), "the best epoch is not the last"

    tested = cli(VL_EVAL, run_dir, cwd=tmp_path)
    assert tested.returncode == 0, tested.stderr
    assert (
        f"checkpoint: {run_dir / 'best.pt'} (epoch 3, the weights that took the run's test; "
        "--checkpoint last for the last epoch's)" in tested.stdout
    )
    report = json.loads((run_dir / "eval_best_test.json").read_text())
    assert report["checkpoint"] == str(run_dir / "best.pt")
    assert report["test/acc"] == run["test/acc"]
    assert report["test/loss"] == pytest.approx(run["test/loss"], rel=1e-6)

    last = cli(VL_EVAL, run_dir, "--checkpoint", "last", cwd=tmp_path)
    assert last.returncode == 0, last.stderr
    assert (
        f"checkpoint: {run_dir / 'last.pt'} (epoch 4, chosen with --checkpoint last; "
        "the run's test was taken on best.pt)" in last.stdout
    )
    assert json.loads((run_dir / "eval_last_test.json").read_text())["test/acc"] != run["test/acc"], (
        "last.pt scores otherwise: the file chosen matters"
    )

    picture = tmp_path / "digit.png"
    Image.new("L", (28, 28), 128).save(picture)
    predicted = cli(VL_PREDICT, run_dir, picture, "--out", tmp_path / "out", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr
    assert f"checkpoint: {run_dir / 'best.pt'} (epoch 3, the weights that took the run's test" in predicted.stdout
    assert (tmp_path / "out" / "predictions.csv").is_file()


def test_checkpoint_choice_is_refused_where_it_cannot_apply(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "model=linear", "trainer.epochs=1"], run_dir).returncode == 0

    on_a_file = cli(VL_EVAL, run_dir / "best.pt", "--checkpoint", "last", cwd=tmp_path)
    assert on_a_file.returncode == 2 and on_a_file.stdout == ""
    assert on_a_file.stderr.strip() == (
        f"error: --checkpoint last picks a file of a run directory, and {run_dir / 'best.pt'} "
        "is a file: give the run directory, or the file alone"
    )
    unknown = cli(VL_EVAL, run_dir, "--checkpoint=first", cwd=tmp_path)
    assert (unknown.returncode, unknown.stderr.strip()) == (
        2,
        "error: --checkpoint 'first' is unknown: use last or best",
    )
    predicted = cli(VL_PREDICT, run_dir, run_dir, "--checkpoint", "first", cwd=tmp_path)
    assert predicted.returncode == 2 and "invalid choice: 'first' (choose from 'last', 'best')" in predicted.stderr
