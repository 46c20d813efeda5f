"""The explicit regularization term R(W), added to the data loss: L = data loss + strength * R(W).

Only weights are penalized (tensors with ndim >= 2: linear matrices and conv kernels), not
biases or normalization scales, as in the course. This is part of the loss and so of its
gradient, unlike an optimizer's decoupled `weight_decay`.

A regularization YAML is `_partial_`; the run calls it with the model's parameters, and the
loop calls the result once per step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import torch
from torch import nn

from visionlab.checks import Number

STRENGTH = Number(ge=0, example=0.0001)


class Penalty:
    """strength * sum over weights W of term(W); subclasses define `term`."""

    def __init__(self, params: Iterable[nn.Parameter], strength: Annotated[float, STRENGTH] = 0.0):
        self.weights = [p for p in params if p.requires_grad and p.ndim >= 2]
        self.strength = float(strength)
        self.zero = torch.zeros((), device=self.weights[0].device if self.weights else None)

    def term(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self) -> torch.Tensor:
        if not self.strength or not self.weights:
            return self.zero
        return self.strength * sum(self.term(w) for w in self.weights)


class NoPenalty(Penalty):
    """`regularization=none`: R(W) = 0, the data loss alone."""

    def __init__(self, params: Iterable[nn.Parameter]):
        super().__init__(params, strength=0.0)


class L2(Penalty):
    """R(W) = sum W^2: prefers many small weights (spreads the evidence)."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return w.square().sum()


class L1(Penalty):
    """R(W) = sum |W|: drives weights to exactly zero (sparse templates)."""

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return w.abs().sum()


class ElasticNet(Penalty):
    """R(W) = sum (beta * W^2 + |W|): L1's sparsity with some of L2's smoothness."""

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        strength: Annotated[float, STRENGTH] = 0.0,
        beta: Annotated[float, Number(ge=0, example=10.0)] = 1.0,
    ):
        super().__init__(params, strength)
        self.beta = float(beta)

    def term(self, w: torch.Tensor) -> torch.Tensor:
        return self.beta * w.square().sum() + w.abs().sum()
