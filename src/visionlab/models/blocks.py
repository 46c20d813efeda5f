"""Small pieces shared by the model families."""

from __future__ import annotations

from torch import nn

from visionlab.errors import UserError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


def activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise UserError(f"model.activation={name!r} is unknown: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()
