"""`vl-eval` rebuilds a model from its checkpoint alone and scores it exactly as the run did."""

from __future__ import annotations

import json
import subprocess

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, VL_TRAIN, read_metrics, run_cli

VL_EVAL = VL_TRAIN.with_name("vl-eval")


@pytest.mark.parametrize("model", ["cnn", "knn"])
def test_vl_eval_reproduces_the_runs_test_accuracy(tmp_path, model):
    run_dir = tmp_path / "run"
    extra = ["model.k=[1,3]"] if model == "knn" else []
    assert run_cli([*TINY, f"model={model}", *extra], run_dir).returncode == 0
    run = read_metrics(run_dir)

    result = subprocess.run([str(VL_EVAL), str(run_dir)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "eval_last_test.json").read_text())
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
    result = subprocess.run([str(VL_EVAL), str(run_dir / "best.pt"), "split=val"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((run_dir / "eval_best_val.json").read_text())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    per_epoch = [e.value for e in events.Scalars("val/acc")]
    assert len(per_epoch) == 4
    assert report["split"] == "val" and report["val/acc"] == pytest.approx(max(per_epoch), abs=1e-6)
