"""trainer.epochs=auto, the recipes' default: an epoch budget that follows the train split's size, a number of
epochs given kept as it is, and early stopping that waits for the budget's steps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.conftest import compose_train, config_error, run_cli
from visionlab.config import build
from visionlab.training.callbacks import EndTraining
from visionlab.training.early_stopping import EarlyStopping, StopEarly
from visionlab.training.epoch_budget import EpochBudget

# 300 synthetic images: 270 train after val, 3 steps an epoch at batch 128
SMALL = ["dataset.train_size=300", "dataset.test_size=100", "logging=none", "trainer.threads=1", "trainer.device=cpu"]


def test_the_budget_is_its_epochs_or_as_many_as_make_its_steps():
    budget = EpochBudget(epochs=10, min_steps=400)
    assert budget.epochs_for(422) == 10  # MNIST at batch 128: one epoch is more than the steps
    assert budget.epochs_for(40) == 10
    assert budget.epochs_for(12) == 34  # a folder of 1,440 training images
    assert budget.epochs_for(2) == 200  # 3 classes x 100 photos
    assert EpochBudget(epochs=3, min_steps=0).epochs_for(1) == 3


@pytest.mark.parametrize(
    "model,epochs,min_steps,patience",
    [("cnn", 10, 400, 2), ("mlp", 3, 400, None), ("linear", 3, 200, None)],
)
def test_every_trained_models_recipe_is_a_budget_and_a_number_given_is_kept(model, epochs, min_steps, patience):
    trainer = build(compose_train([f"model={model}"]), "trainer")
    assert trainer.epochs == "auto" and trainer.early_stopping.patience == patience
    assert (trainer.epoch_budget.epochs, trainer.epoch_budget.min_steps) == (epochs, min_steps)
    small = trainer.for_steps_per_epoch(2)  # every epoch of the budget's steps, the last weights tested
    assert small.epochs == min_steps // 2 and not small.early_stopping.enabled and not small.tests_best()
    large = trainer.for_steps_per_epoch(min_steps // epochs + 1)  # its epochs are enough steps
    assert large.epochs == epochs and large.early_stopping.min_steps == min_steps
    assert large.early_stopping.enabled == (patience is not None) == large.tests_best()
    given = build(compose_train([f"model={model}", "trainer.epochs=4"]), "trainer")
    assert given.for_steps_per_epoch(2) is given and given.early_stopping.min_steps == 0
    assert build(compose_train([f"model={model}", "recipe=none"]), "trainer").epochs == 3


def test_early_stopping_ends_no_run_before_its_min_steps():
    stale = {epoch: {"val/acc": 0.5} for epoch in (1, 2, 3)}  # two epochs without improvement
    rule = StopEarly(EarlyStopping(patience=1, min_steps=30), "val/acc")
    rule.after_epoch(SimpleNamespace(history=stale, at=SimpleNamespace(step=29)), 3, {}, {})
    with pytest.raises(EndTraining):
        rule.after_epoch(SimpleNamespace(history=stale, at=SimpleNamespace(step=30)), 3, {}, {})


@pytest.mark.parametrize(
    "override,message",
    [
        ("trainer.epochs=some", "trainer.epochs='some' is invalid: use a whole number of at least 1, or one of auto"),
        ("trainer.epoch_budget.min_steps=-5", "trainer.epoch_budget.min_steps=-5 is invalid"),
        ("trainer.early_stopping.min_steps=1.5", "trainer.early_stopping.min_steps=1.5 is invalid"),
    ],
)
def test_bad_budget_settings_name_the_key(override, message):
    assert message in config_error([override])


def test_a_small_train_split_trains_the_budgets_steps_and_says_so(tmp_path):
    """The cnn recipe on 270 training images: 3 steps an epoch, so a budget of 60 steps is 20 epochs, every one
    trained and the last tested, where early stopping would have ended it and tested an epoch picked by 30 val
    images; the log says what the budget chose."""
    done = run_cli(["model=cnn", *SMALL, "trainer.epoch_budget.min_steps=60"], tmp_path / "run")
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["epochs"], metrics["steps"]) == (20, 60) and not {"stopped_early", "tested_epoch"} & set(metrics)
    log = (tmp_path / "run" / "train.log").read_text()
    assert (
        "epochs=auto: 20 epochs of 3 steps, to make the budget's 60 steps (trainer.epoch_budget), every one of them, "
        "with no early stopping: the last weights take the test" in log
    )
    given = run_cli(["model=cnn", *SMALL, "trainer.epoch_budget.min_steps=60", "trainer.epochs=2"], tmp_path / "given")
    assert given.returncode == 0, given.stderr[-2000:]
    assert json.loads((tmp_path / "given" / "metrics.json").read_text())["steps"] == 6
    assert "epochs=auto" not in (tmp_path / "given" / "train.log").read_text()
