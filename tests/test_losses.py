"""The course's losses on hand-worked numbers, and each loss config as the callable the loop expects."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from tests.conftest import compose_train, config_error
from visionlab.losses import NLL, MulticlassHinge, OneHotL1, OneHotMSE

# The course's example: three images, three classes; each row is one image's scores.
SCORES = torch.tensor([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])
LABELS = torch.tensor([0, 1, 2])


def test_hinge_matches_the_hand_worked_example():
    hinge = MulticlassHinge(margin=1.0)
    per_example = [hinge(SCORES[i : i + 1], LABELS[i : i + 1]).item() for i in range(3)]
    assert per_example == pytest.approx([2.9, 0.0, 12.9])
    assert hinge(SCORES, LABELS).item() == pytest.approx(15.8 / 3)  # 5.27, as the course rounds it


def test_hinge_gradient_pushes_correct_score_up_and_violators_down():
    scores = SCORES[:1].clone().requires_grad_()
    MulticlassHinge()(scores, LABELS[:1]).backward()
    # Only class 1 violates the margin: d/ds_1 = +1, d/ds_y = -1, the satisfied class 2 gets 0.
    assert scores.grad.tolist() == [[-1.0, 1.0, 0.0]]


def test_hinge_margin_must_not_be_negative():
    assert "loss.margin=-1 is invalid: use a number of at least 0" in config_error(["loss=hinge", "loss.margin=-1"])


def test_mse_and_l1_compare_scores_with_one_hot_labels():
    scores = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, -1.0]])
    labels = torch.tensor([0, 1])
    # Row 0 is exactly one-hot; row 1 is off by (0.5, -0.5, -1).
    assert OneHotMSE()(scores, labels).item() == pytest.approx((0 + 0.25 + 0.25 + 1.0) / 2)
    assert OneHotL1()(scores, labels).item() == pytest.approx((0 + 0.5 + 0.5 + 1.0) / 2)


def test_nll_applies_log_softmax_so_it_equals_cross_entropy():
    scores = torch.randn(8, 10, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(8)
    assert NLL()(scores, labels).item() == pytest.approx(F.cross_entropy(scores, labels).item())


@pytest.mark.parametrize(
    "name,expected", [("hinge", 5.27), ("nll", None), ("mse", None), ("l1", None), ("cross_entropy", None)]
)
def test_loss_config_is_a_callable_from_scores_and_labels_to_a_scalar(name, expected):
    loss = instantiate(compose_train([f"loss={name}"]).loss)(SCORES, LABELS)
    assert loss.ndim == 0 and torch.isfinite(loss)
    if expected is not None:
        assert loss.item() == pytest.approx(expected, abs=0.005)
