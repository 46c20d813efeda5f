"""Long runs: a real `vl-train` killed or signalled mid-run, then resumed, ends as if never stopped."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import (
    TINY,
    VL_TRAIN,
    metrics_of_a_run_left_alone,
    read_metrics,
    run_cli,
    start_vl_train,
    vl_train,
    wait_for_position,
    without_timing,
)

# 4 epochs of 38 steps of 16 images: a signal sent once epoch 2 is under way lands with epochs to spare.
LONG_EPOCHS = [*TINY, "trainer.epochs=4", "trainer.batch_size=16", "trainer.log_every_n_steps=3", "model=cnn"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return metrics_of_a_run_left_alone(LONG_EPOCHS, tmp_path_factory)


@pytest.mark.parametrize("every_steps", [None, 7], ids=["epoch-checkpoints", "step-checkpoints"])
def test_sigkill_mid_epoch_then_resume_ends_identical(tmp_path, uninterrupted, every_steps):
    run_dir = tmp_path / "run"
    extra = [] if every_steps is None else [f"trainer.checkpoint_every_steps={every_steps}"]
    process = start_vl_train([*LONG_EPOCHS, *extra], run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2 and (not every_steps or at["batch"] > 0))
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists()
    position = torch.load(run_dir / "last.pt", weights_only=True)["position"]
    assert 2 <= position["epoch"] <= 4, "killed after epoch 1's checkpoint"
    if every_steps:
        assert position["step"] % every_steps == 0 or position["batch"] == 0  # a mid-epoch or an epoch checkpoint

    resumed = run_cli([f"resume={run_dir}"], run_dir.parent / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in (run_dir / "train.log").read_text()
    assert without_timing(read_metrics(run_dir)) == without_timing(uninterrupted)

    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in ("train/loss", "val/acc"):
        steps = [e.step for e in events.Scalars(tag)]
        assert steps == sorted(set(steps)), f"{tag} has a step twice after resuming: {steps}"
    assert len(events.Scalars("val/acc")) == 4


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2])
def test_a_signal_stops_at_a_step_saves_and_resumes(tmp_path, uninterrupted, signum):
    """SIGHUP stops only with trainer.on_hangup=stop (by default a run carries on: tests/cli/test_terminal.py)."""
    run_dir = tmp_path / "run"
    process = start_vl_train([*LONG_EPOCHS, "trainer.on_hangup=stop"], run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    process.send_signal(signum)
    assert process.wait(timeout=60) == 128 + signum
    stderr = process.stderr.read()
    assert f"received {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr
    metrics = read_metrics(run_dir)
    position = torch.load(run_dir / "last.pt", weights_only=True)["position"]
    assert metrics["status"] == "interrupted" and 1 <= metrics["epochs"] < 4
    # saved at the step it stopped
    assert metrics["epochs"] == position["epoch"] - 1 and metrics["steps"] == position["step"]
    assert metrics["test/acc"] is None, "a stopped run has not looked at test"

    resumed = run_cli([f"resume={run_dir / 'last.pt'}"], run_dir.parent / "again")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(uninterrupted)


def test_resume_auto_finds_the_latest_unfinished_run_with_the_same_overrides(tmp_path, uninterrupted):
    args = [*LONG_EPOCHS]
    process = subprocess.Popen(
        [str(VL_TRAIN), *args],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_position(tmp_path / "outputs", None, lambda at: True, checkpoint_glob="*/*/last.pt")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    (stopped,) = [p.parent for p in (tmp_path / "outputs").glob("*/*/last.pt")]

    other = vl_train(["resume=auto", *args, "seed=5"], tmp_path, timeout=120)
    assert other.returncode == 0 and "no unfinished run" in other.stdout  # different overrides: a new run

    again = vl_train(["resume=auto", *args], tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"resuming from {stopped / 'last.pt'}" in again.stdout
    assert without_timing(read_metrics(stopped)) == without_timing(uninterrupted)


def test_a_diverging_run_stops_with_exit_code_3(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        [*TINY, "model=linear", "loss=mse", "optimizer=sgd", "optimizer.lr=1e10", "scheduler=none"], run_dir
    )
    assert result.returncode == 3, result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(error_lines) == 1 and "diverged" in error_lines[0] and "optimizer.lr" in error_lines[0]
    assert "lr 1e+10" in error_lines[0] and "step" in error_lines[0]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "diverged" and metrics["test/acc"] is None


def test_resuming_a_completed_run_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "model=linear"], run_dir).returncode == 0
    result = run_cli([f"resume={run_dir}"], tmp_path / "again")
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "error: resume=" in line and "already completed" in line


def test_the_log_file_has_every_line_the_terminal_had(tmp_path):
    """For nohup and tmux users: train.log alone tells the whole story."""
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=linear"], run_dir)
    assert result.returncode == 0
    log_text = (run_dir / "train.log").read_text()
    terminal = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    missing = [line for line in terminal if line not in log_text]
    assert not missing, missing
    assert "test/acc" in log_text and "step 5 loss" in log_text


# 3 folds of 400 training images, 2 epochs of 25 steps each, a checkpoint every 5 steps.
KFOLD = [
    *TINY,
    "split=kfold",
    "split.folds=3",
    "trainer.batch_size=16",
    "trainer.checkpoint_every_steps=5",
    "model=cnn",
]


@pytest.fixture(scope="module")
def kfold_uninterrupted(tmp_path_factory) -> dict:
    return metrics_of_a_run_left_alone(KFOLD, tmp_path_factory)


def test_kfold_killed_in_fold_3_resumes_there_and_ends_identical(tmp_path, kfold_uninterrupted):
    run_dir = tmp_path / "run"
    process = start_vl_train(KFOLD, run_dir)
    wait_for_position(run_dir, process, lambda at: at["partition"] == 2 and at["batch"] > 0)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["partition"] == 2 and len(state["partitions_done"]) == 2  # folds 1 and 2 are done, their results saved
    fold_last = torch.load(run_dir / "fold_2" / "last.pt", weights_only=True)
    # The run's last.pt is fold 3's, or, when the kill fell between writing fold 3's newest checkpoint
    # and linking it as the run's, fold 3's one before: resuming from either ends identical.
    if not (run_dir / "fold_2" / "last.pt").samefile(run_dir / "last.pt"):
        assert state["position"]["step"] < fold_last["position"]["step"]

    resumed = run_cli([f"resume={run_dir}"], run_dir.parent / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    log = (run_dir / "train.log").read_text()
    assert "resuming from" in log and log.count("fold 2 of 3: ") == 1, "folds 1 and 2 are not trained again"
    assert without_timing(read_metrics(run_dir)) == without_timing(kfold_uninterrupted)
    events = EventAccumulator(str(run_dir / "fold_2"))
    events.Reload()
    steps = [e.step for e in events.Scalars("train/batch_loss")]
    assert steps == sorted(set(steps)), f"fold 3 logs a step twice after resuming: {steps}"


def test_sigterm_in_a_kfold_run_saves_exits_143_and_resumes(tmp_path, kfold_uninterrupted):
    run_dir = tmp_path / "run"
    process = start_vl_train(KFOLD, run_dir)
    wait_for_position(run_dir, process, lambda at: at["partition"] == 1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["cv/folds_done"] == 1 and metrics["val/acc"] is None
    assert torch.load(run_dir / "last.pt", weights_only=True)["partition"] == 1

    resumed = run_cli([f"resume={run_dir}"], run_dir.parent / "again")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(kfold_uninterrupted)


def test_a_file_that_is_no_checkpoint_is_refused_before_hydra_writes_beside_it(tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "some_file.txt").write_text("not a checkpoint\n")
    result = subprocess.run(
        [str(VL_TRAIN), "resume=notes/some_file.txt"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"checkpoint {notes / 'some_file.txt'} is corrupt or not a visionlab checkpoint" in line
    assert sorted(p.name for p in notes.iterdir()) == ["some_file.txt"], "no .hydra/ and no train.log beside it"
    assert not (tmp_path / "outputs").exists()


def test_a_truncated_last_pt_names_the_best_pt_beside_it(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "model=linear", "trainer.epochs=1"], run_dir).returncode == 0
    (run_dir / "metrics.json").unlink()  # as a run killed before its end leaves it
    whole = (run_dir / "last.pt").read_bytes()
    (run_dir / "last.pt").unlink()  # best.pt is a hard link to it: truncate a file of its own, as a torn copy would be
    (run_dir / "last.pt").write_bytes(whole[: len(whole) // 2])

    result = subprocess.run(
        [str(VL_TRAIN), f"resume={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"checkpoint {run_dir / 'last.pt'} is corrupt" in line and f"resume={run_dir / 'best.pt'}" in line

    (run_dir / "best.pt").write_bytes(b"")
    result = subprocess.run(
        [str(VL_TRAIN), f"resume={run_dir}"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and "best.pt" not in result.stderr, "a best.pt that does not load is not offered"
