"""The real `vl-train` command, in subprocesses, on tiny synthetic data."""

from __future__ import annotations

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, read_metrics, run_cli, vl_train

METRIC_KEYS = {
    "train/loss",
    "train/acc",
    "val/acc",
    "val/loss",
    "test/acc",
    "test/loss",
    "epochs",
    "seconds",
    "device",
    "status",
}
SCALAR_TAGS = {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "test/acc", "test/loss"}


@pytest.mark.parametrize("model", ["linear", "mlp", "cnn"])
def test_each_model_trains_and_writes_the_run_directory(tmp_path, model):
    run_dir = tmp_path / "run"
    result = run_cli([f"model={model}", *TINY], run_dir)
    assert result.returncode == 0, result.stderr

    metrics = read_metrics(run_dir)
    assert METRIC_KEYS <= metrics.keys()
    assert metrics["status"] == "completed" and metrics["device"] == "cpu" and metrics["epochs"] == 2
    assert metrics["val/acc"] > 0.3, "tiny synthetic data is learnable well above the 10% chance level"
    assert metrics["test/acc"] > 0.3 and metrics["test/loss"] > 0

    assert (run_dir / ".hydra" / "config.yaml").is_file()
    log_text = (run_dir / "train.log").read_text()
    assert "epoch 2/2" in log_text and "run directory" in log_text

    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert SCALAR_TAGS <= set(events.Tags()["scalars"])
    assert len(events.Scalars("val/acc")) == 2  # once per epoch
    assert len(events.Scalars("test/acc")) == 1  # the test set is touched once


def test_output_without_a_terminal_is_plain_lines(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(["model=linear", *TINY], run_dir)
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\r" not in result.stdout
    step_lines = [line for line in result.stdout.splitlines() if " step " in line and "img/s" in line]
    assert step_lines, "with no progress bar, the every-N-steps lines stand in for it"
    assert "test/acc" in result.stdout  # the final table


def test_same_seed_gives_the_same_metrics(tmp_path):
    runs = []
    for name in ("a", "b"):
        result = run_cli(["model=cnn", "seed=7", *TINY], tmp_path / name)
        assert result.returncode == 0, result.stderr
        metrics = read_metrics(tmp_path / name)
        metrics.pop("seconds")
        runs.append(metrics)
    assert runs[0] == runs[1]


def test_different_seeds_give_different_runs(tmp_path):
    accs = []
    for seed in (1, 2):
        assert run_cli(["model=mlp", f"seed={seed}", *TINY], tmp_path / str(seed)).returncode == 0
        accs.append(read_metrics(tmp_path / str(seed))["train/loss"])
    assert accs[0] != accs[1]


def test_the_value_a_sweeper_gets_is_the_objective_of_metrics_json(tmp_path):
    """A one-trial Optuna search minimizing val/loss: the value the study records is the run's val/loss."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hparams_search=linear_optuna",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.direction=minimize",
        "objective=val/loss",
        *TINY,
        f"hydra.sweep.dir={sweep}",
    ]
    result = vl_train(args, tmp_path)
    assert result.returncode == 0, result.stderr
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())["best_value"]
    assert (
        best == pytest.approx(read_metrics(sweep / "0")["val/loss"], rel=1e-12)
        and best != read_metrics(sweep / "0")["val/acc"]
    )


def test_vl_data_dir_points_at_the_data(tmp_path, shared_data):
    result = run_cli(
        ["dataset=mnist", "dataset.train_size=3000", "dataset.test_size=1000", "model=linear", "trainer.epochs=3"],
        tmp_path / "run",
        env={"VL_DATA_DIR": str(shared_data)},
    )
    assert result.returncode == 0, result.stderr
    assert read_metrics(tmp_path / "run")["test/acc"] > 0.8
