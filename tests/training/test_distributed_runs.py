"""What else a run does, on several processes (docs/architecture.md, "Several processes": "Everything else a run
does holds"): k-fold and a sweep whose jobs ask for trainer.devices=2 end as they do on one process. Real vl-train
processes on the tiny BatchNorm-free MLP of test_distributed.py, whose 2 processes and 1 differ only in the order of
float additions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import read_metrics, run_cli, vl_train
from tests.training.test_distributed import FRESH, MLP, TWO

SHORT = [*MLP, "trainer.epochs=1"]
KFOLD = [*SHORT, "split=kfold", "split.folds=2"]
ON_TWO = "device: cpu (1 CPU threads each, 2 processes with a share of every batch of 64)"


def close(two: dict, one: dict, keys: list[str]) -> None:
    """The tolerance of test_distributed's comparison of 2 processes with 1."""
    for key in keys:
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


def test_kfold_on_two_processes_is_one_run_whose_folds_end_as_on_one(tmp_path):
    two_dir, one_dir = tmp_path / "two" / "run", tmp_path / "one" / "run"
    two_dir.parent.mkdir()
    one_dir.parent.mkdir()
    result = run_cli([*KFOLD, *TWO], two_dir, env=FRESH)
    assert result.returncode == 0, result.stderr
    result = run_cli(KFOLD, one_dir)
    assert result.returncode == 0, result.stderr
    assert os.listdir(two_dir.parent) == ["run"], "one run folder, not one per rank"
    two, one = read_metrics(two_dir), read_metrics(one_dir)
    assert two["status"] == "completed" and two["cv/folds"] == 2 and two["steps"] == one["steps"]
    folds = [f"cv/fold_{i}/{name}" for i in (0, 1) for name in ("val_acc", "val_loss")]
    close(two, one, [*folds, "cv/val_acc_mean", "val/loss", "train/loss", "train/acc"])
    assert (two_dir / "train.log").read_text().count(ON_TWO) == 1


def sweep(folder: Path, extra: list[str], env: dict | None = None) -> list[dict]:
    """`vl-train -m` over two learning rates into `folder`: each job's metrics, in job order."""
    args = ["-m", *SHORT, *extra, "optimizer.lr=0.1,0.05", f"hydra.sweep.dir={folder}"]
    result = vl_train(args, folder.parent, env=env)
    assert result.returncode == 0, result.stderr
    return [read_metrics(folder / job) for job in ("0", "1")]


def test_a_sweep_whose_jobs_ask_for_two_devices_ends_each_job_as_on_one_process(tmp_path):
    two = sweep(tmp_path / "two", TWO, env=FRESH)
    one = sweep(tmp_path / "one", [])
    assert two[0]["val/loss"] != two[1]["val/loss"], "each job trained with its own lr"
    for job, (mine, alone) in enumerate(zip(two, one, strict=True)):
        assert mine["status"] == "completed", job
        close(mine, alone, ["train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"])
        assert (tmp_path / "two" / str(job) / "train.log").read_text().count(ON_TWO) == 1, job
