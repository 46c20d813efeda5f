"""Small pieces shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from torch import nn

from visionlab.checks import Each, Number, OneOf, Whole

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


Activation = Annotated[str, OneOf(*ACTIVATIONS)]  # a model's `activation` argument
Dropout = Annotated[float, Number(ge=0, lt=1, example=0.25)]  # the probability of zeroing a unit
Widths = Annotated[Sequence[int], Each(Whole(1), example="[16, 32, 64]")]  # channels per stage
Hidden = Annotated[Sequence[int], Each(Whole(1), empty_ok=True, example="[128], or [] for none")]  # units per hidden layer


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()
