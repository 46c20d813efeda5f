"""Losses from the course that torch lacks. Each maps class scores [N, C] and labels [N] to a scalar.

Every model returns raw, unnormalized scores; a loss decides what to make of them. All losses
here sum over classes for one example and average over the batch, like the course's
L = (1/N) sum_i L_i.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.checks import Number


class MulticlassHinge(nn.Module):
    """The multiclass SVM loss: L_i = sum over j != y_i of max(0, s_j - s_{y_i} + margin)."""

    def __init__(self, margin: Annotated[float, Number(ge=0, example=1.0)] = 1.0):
        super().__init__()
        self.margin = float(margin)

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        correct = scores.gather(1, targets[:, None])
        margins = (scores - correct + self.margin).clamp_min(0)
        # The j = y_i term is exactly `margin`; subtract it instead of masking it out.
        return margins.sum(1).mean() - self.margin


class OneHotMSE(nn.Module):
    """Squared error against one-hot targets: L_i = ||s_i - onehot(y_i)||^2 (regression on the labels)."""

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (scores - F.one_hot(targets, scores.shape[1]).to(scores.dtype)).square().sum(1).mean()


class OneHotL1(nn.Module):
    """Absolute error against one-hot targets: L_i = |s_i - onehot(y_i)|_1."""

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (scores - F.one_hot(targets, scores.shape[1]).to(scores.dtype)).abs().sum(1).mean()


class NLL(nn.Module):
    """Negative log-likelihood of the label under softmax(scores): L_i = -log softmax(s_i)[y_i].

    Models return raw scores, not log-probabilities, so log_softmax is applied here: torch's
    NLLLoss on raw scores would be -s_y, which has no minimum. The result equals cross_entropy
    (without label smoothing), written as its two course steps: probabilities, then their -log.
    """

    def forward(self, scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(F.log_softmax(scores, dim=1), targets)
