"""trainer.early_stopping and trainer.test_on: the patience rule, the best epoch's weights tested,
and resume keeping the count."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import TINY, compose_train, config_error
from visionlab.experiment import run
from visionlab.training.early_stopping import best_epoch, epochs_without_improvement

QUIET = ["logging=none"]
# lr 0.3 for Adam makes val/acc bounce, so a patience of 1 runs out well before 12 epochs
BOUNCING = [
    *TINY,
    *QUIET,
    "model=mlp",
    "recipe=none",
    "trainer.epochs=12",
    "trainer.early_stopping.patience=1",
    "optimizer.lr=0.3",
]


def history(*values: float, key: str = "val/acc") -> dict[int, dict[str, float]]:
    return {epoch: {key: value} for epoch, value in enumerate(values, start=1)}


def test_patience_counts_epochs_since_the_last_improvement_by_more_than_min_delta():
    assert epochs_without_improvement(history(0.5, 0.6, 0.6, 0.59), "val/acc", 0.0) == 2
    # +0.005 and +0.01 are not enough
    assert epochs_without_improvement(history(0.5, 0.6, 0.605, 0.61), "val/acc", 0.01) == 2
    # a loss improves downwards
    assert epochs_without_improvement(history(2.0, 1.5, 1.6, 1.4, key="val/loss"), "val/loss", 0.0) == 0


def test_the_best_epoch_is_the_first_with_the_best_value():
    assert best_epoch(history(0.5, 0.7, 0.7, 0.6), "val/acc") == 2
    assert best_epoch(history(2.0, 1.0, 1.5, key="val/loss"), "val/loss") == 2


def test_a_run_with_patience_stops_early_and_tests_the_best_epoch(tmp_path):
    overrides = BOUNCING
    metrics = run(compose_train(overrides), tmp_path)
    assert metrics["stopped_early"] is True and metrics["epochs"] < 12
    best = metrics["best_epoch"]
    assert 1 <= best < metrics["epochs"] and metrics["tested_epoch"] == best
    saved = torch.load(tmp_path / "best.pt", weights_only=True)
    assert saved["position"]["epoch"] == best + 1, "best.pt holds the best epoch's weights"
    assert metrics["val/acc"] == saved["history"][best]["val/acc"], (
        "metrics.json describes the weights that were tested"
    )
    summary = (tmp_path / "summary.md").read_text()
    assert f"best epoch by val/acc: {best} of {metrics['epochs']}" in summary and "the model tested" not in summary


def test_test_on_last_keeps_the_last_weights_even_with_early_stopping(tmp_path):
    overrides = [
        *BOUNCING,
        "trainer.test_on=last",
    ]
    metrics = run(compose_train(overrides), tmp_path)
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert metrics["val/acc"] == last["history"][metrics["epochs"]]["val/acc"] and "tested_epoch" not in metrics


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.early_stopping.patience=0", "trainer.early_stopping.patience=0 is invalid"),
        ("trainer.early_stopping.min_delta=-1", "trainer.early_stopping.min_delta=-1 is invalid"),
        ("trainer.test_on=first", "trainer.test_on='first' is invalid: use one of best, last, or null"),
    ],
)
def test_bad_early_stopping_settings_name_the_key(override, message):
    assert message in config_error([override])


def test_a_resumed_run_keeps_the_patience_count_from_its_history():
    """The count lives in the saved history: a run resumed after its patience ran out ends before training more."""
    from types import SimpleNamespace

    from visionlab.training.callbacks import EndTraining
    from visionlab.training.early_stopping import EarlyStopping, StopEarly

    rule = StopEarly(EarlyStopping(patience=2), "val/acc")
    at = SimpleNamespace(step=40)
    rule.start_epoch(SimpleNamespace(history=history(0.5, 0.6, 0.55), at=at), steps=10)  # one stale epoch: carries on
    with pytest.raises(EndTraining) as ended:
        rule.start_epoch(SimpleNamespace(history=history(0.5, 0.6, 0.55, 0.58), at=at), steps=10)
    assert ended.value.extra == {"stopped_early": True, "best_epoch": 2}


def test_each_objective_knows_its_direction():
    from visionlab.config import OBJECTIVES
    from visionlab.objective import better

    assert set(OBJECTIVES) == {"val/acc", "val/loss", "train/acc", "train/loss"}
    for objective in OBJECTIVES:
        higher_wins = objective.endswith("/acc")
        assert better(0.6, 0.5, objective) is higher_wins and better(0.4, 0.5, objective) is not higher_wins
        assert not better(0.5, 0.5, objective), "a tie is no improvement"
    assert better(0.56, 0.5, "val/acc", by=0.05) and not better(0.54, 0.5, "val/acc", by=0.05)
    assert better(0.44, 0.5, "val/loss", by=0.05) and not better(0.46, 0.5, "val/loss", by=0.05)
