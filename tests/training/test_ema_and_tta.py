"""trainer.ema and trainer.tta through a real run: the average is what is kept, saved and resumed;
TTA changes only the test pass."""

from __future__ import annotations

import torch

from tests.conftest import TINY, compose_train
from visionlab.experiment import build_components, prepare_data, run
from visionlab.training.lookahead import Lookahead
from visionlab.training.precision import Precision
from visionlab.training.state import TrainingState

QUIET = ["logging=none"]


def test_ema_changes_training_and_the_checkpoint_holds_the_average(tmp_path):
    plain = run(compose_train([*TINY, *QUIET, "model=mlp"]), tmp_path / "plain")
    averaged = run(compose_train([*TINY, *QUIET, "model=mlp", "trainer.ema=2"]), tmp_path / "ema")
    assert averaged["val/acc"] != plain["val/acc"] or averaged["val/loss"] != plain["val/loss"]
    last = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    weights = {k: v for k, v in last["model"].items() if v.is_floating_point()}
    assert last["lookahead"].keys() == weights.keys()
    for name, value in weights.items():  # after the last step the weights are the average
        assert torch.equal(value, last["lookahead"][name]), name


def test_a_state_with_a_lookahead_restores_the_average():
    components = build_components(compose_train([*TINY, "model=mlp"]))
    splits = prepare_data(components, torch.device("cpu"))
    model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
    optimizer = components.learner.optimizer(model.parameters())

    def make(m):
        return TrainingState(
            m,
            optimizer,
            components.learner.schedule(optimizer, epochs=2, steps_per_epoch=8),
            Precision(),
            torch.Generator().manual_seed(0),
            lookahead=Lookahead(m, total_steps=16, every=2),
        )

    state = make(model)
    for average in state.lookahead.average.values():
        average.add_(1.0)
    saved = state.state_dict()
    fresh = make(components.model(in_shape=splits.in_shape, num_classes=splits.num_classes))
    fresh.load_state_dict(saved)
    for name, average in fresh.lookahead.average.items():
        assert torch.equal(average, saved["lookahead"][name])


def test_tta_changes_the_test_pass_only(tmp_path):
    args = [*TINY, *QUIET, "model=cnn", "trainer.epochs=1"]
    plain = run(compose_train(args), tmp_path / "plain")
    flipped = run(compose_train([*args, "trainer.tta=flip"]), tmp_path / "flip")
    assert (flipped["train/loss"], flipped["val/acc"], flipped["val/loss"]) == (
        plain["train/loss"],
        plain["val/acc"],
        plain["val/loss"],
    )
    assert flipped["test/loss"] != plain["test/loss"], "the mirrored images' scores are averaged in"
