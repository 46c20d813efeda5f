"""fit() on its own, without the CLI: its signature, what it learns, and a state that saves and restores whole."""

from __future__ import annotations

import inspect

import pytest
import torch

from tests.conftest import compose_train
from visionlab.errors import Interrupted
from visionlab.experiment import build_components, prepare_data
from visionlab.training.callbacks import Callback
from visionlab.training.loop import Objective, fit
from visionlab.training.precision import Precision
from visionlab.training.state import TrainingState

SMALL = [
    "dataset.train_size=300",
    "dataset.test_size=100",
    "trainer.batch_size=32",
    "trainer.epochs=2",
    "model=mlp",
    "recipe=none",
]


@pytest.fixture(scope="module")
def setup():
    components = build_components(compose_train(SMALL))
    return components, prepare_data(components, torch.device("cpu"))


def fresh_state(components, splits) -> TrainingState:
    torch.manual_seed(0)
    model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
    optimizer = components.learner.optimizer(model.parameters())
    schedule = components.learner.schedule(optimizer, epochs=components.trainer.epochs, steps_per_epoch=9)
    return TrainingState(model, optimizer, schedule, Precision(), torch.Generator().manual_seed(0))


def train(state, components, splits, callbacks=()):
    objective = Objective(components.learner.loss_fn, components.learner.penalty(state.model.parameters()))
    return fit(state, splits, components.dataset.augment, objective, components.trainer, callbacks)


def test_fit_takes_the_state_the_data_the_objective_the_settings_and_callbacks():
    assert list(inspect.signature(fit).parameters) == [
        "state",
        "splits",
        "augment",
        "objective",
        "settings",
        "callbacks",
    ]


def test_fit_learns_the_shapes_and_records_each_epoch(setup):
    components, splits = setup
    state = fresh_state(components, splits)
    result = train(state, components, splits)
    # 270 training images in batches of 32: 9 steps
    assert result.epochs == 2 and result.steps == state.at.step == 2 * 9
    assert result.val["acc"] > 0.3, "far above the 1/10 of chance on the ten shapes"
    assert sorted(state.history) == [1, 2] and state.history[2]["val/acc"] == result.val["acc"]
    assert state.at.epoch == 3 and state.at.batch == 0


class StopAtStep(Callback):
    """Plays a stop request landing at `step`: what SaveAndStop does once a signal has come."""

    def __init__(self, step: int):
        self.step, self.saved = step, None

    def after_step(self, state, loss, images):
        if state.at.step == self.step:
            self.saved = state.state_dict()
            raise Interrupted(15)


def test_a_state_saved_mid_epoch_and_restored_into_fresh_objects_ends_bit_identical(setup):
    components, splits = setup
    straight = fresh_state(components, splits)
    expected = train(straight, components, splits)

    stopper = StopAtStep(13)  # in epoch 2
    with pytest.raises(Interrupted) as stopped:
        train(fresh_state(components, splits), components, splits, [stopper])
    assert stopped.value.result.epochs == 1 and stopped.value.result.steps == 13

    torch.manual_seed(123)  # whatever the global generators did since, the state brings its own back
    resumed = fresh_state(components, splits)
    resumed.load_state_dict(stopper.saved)
    assert resumed.at.step == 13 and resumed.at.batch == 4  # 9 steps per epoch
    result = train(resumed, components, splits)
    assert (result.val["acc"], result.val["loss"]) == (expected.val["acc"], expected.val["loss"])
    assert torch.equal(result.val["confusion"], expected.val["confusion"])
    assert result.train == expected.train and result.steps == expected.steps
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b)
