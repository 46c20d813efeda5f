"""R(W): which parameters it sees, the value of each penalty, and bad strengths."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_train, config_error
from visionlab.regularization import L1, L2, ElasticNet, NoPenalty


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(8, 3))


def weights(model: nn.Module) -> list[torch.Tensor]:
    return [model[0].weight, model[3].weight]


def test_only_weight_matrices_and_kernels_are_penalized():
    model = small_model()
    penalty = L2(model.parameters(), strength=1.0)
    assert [tuple(w.shape) for w in penalty.weights] == [(2, 1, 3, 3), (3, 8)]  # no biases, no BatchNorm scale


@pytest.mark.parametrize(
    "make,term",
    [
        (lambda p: L2(p, strength=0.5), lambda w: w.square().sum()),
        (lambda p: L1(p, strength=0.5), lambda w: w.abs().sum()),
        (lambda p: ElasticNet(p, strength=0.5, beta=2.0), lambda w: 2.0 * w.square().sum() + w.abs().sum()),
    ],
    ids=["l2", "l1", "elastic_net"],
)
def test_penalty_is_strength_times_the_sum_over_weights(make, term):
    model = small_model()
    expected = 0.5 * sum(term(w) for w in weights(model))
    value = make(model.parameters())()
    assert value.item() == pytest.approx(expected.item())
    value.backward()  # part of the loss, so it has a gradient on the weights
    assert model[3].weight.grad is not None and model[3].bias.grad is None


def test_none_and_zero_strength_add_nothing():
    model = small_model()
    assert NoPenalty(model.parameters())().item() == 0.0
    assert L2(model.parameters(), strength=0.0)().item() == 0.0


def test_negative_strength_is_a_user_error():
    assert "regularization.strength=-0.1 is invalid: use a number of at least 0" in config_error(
        ["regularization=l2", "regularization.strength=-0.1"]
    )


@pytest.mark.parametrize("name", ["none", "l2", "l1", "elastic_net"])
def test_regularization_config_binds_to_the_model_parameters(name):
    cfg = compose_train([f"regularization={name}"])
    value = instantiate(cfg.regularization)(small_model().parameters())()
    assert value.ndim == 0 and value.item() >= 0
