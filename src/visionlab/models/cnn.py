"""A configurable ConvNet: stages of [conv -> BatchNorm -> activation] x n -> pool, then an MLP head.

With max pooling and a non-decreasing activation, each stage's last activation runs after the pool,
which gives the same numbers for a quarter of the work.

Presets (the default small net, LeNet-5-like shapes, ...) are YAML files over these knobs, not code.
"""

from __future__ import annotations

from typing import Annotated

from torch import nn

from visionlab.checks import OneOf, Switch, Whole
from visionlab.errors import SettingRejected
from visionlab.models.blocks import Activation, Dropout, Hidden, Widths
from visionlab.models.blocks import activation as make_activation

POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
# Non-decreasing activations f, for which max-pooling then f equals f then max-pooling: max f(x) = f(max x),
# gradients included (the max's position is the same). 12% of a default MNIST step; checkpoints keep their keys.
MONOTONE = ("relu", "leaky_relu", "elu", "sigmoid", "tanh")


class CNN(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        channels: Widths = (16, 32, 64),
        convs_per_stage: Annotated[int, Whole(1)] = 1,
        kernel_size: Annotated[int, Whole(1, unit="pixels")] = 3,
        pool: Annotated[str, OneOf(*POOLS, "none")] = "max",
        batchnorm: Annotated[bool, Switch()] = True,
        activation: Activation = "relu",
        hidden: Hidden = (128,),
        dropout: Dropout = 0.25,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_shape[0]
        for out in channels:
            for _ in range(convs_per_stage):
                layers.append(nn.Conv2d(width, out, kernel_size, padding=kernel_size // 2, bias=not batchnorm))
                if batchnorm:
                    layers.append(nn.BatchNorm2d(out))
                layers.append(make_activation(activation))
                width = out
            if pool != "none":
                layers.append(POOLS[pool](2))
                # the same net, with the activation on a quarter of the values
                if pool == "max" and activation in MONOTONE:
                    layers[-2], layers[-1] = layers[-1], layers[-2]
        self.features = nn.Sequential(*layers)
        rows, cols = (
            feature_side(side, len(channels), convs_per_stage, kernel_size, pool != "none") for side in in_shape[1:]
        )
        if min(rows, cols) < 1:
            raise SettingRejected(
                f"model.channels={list(channels)} pools a {in_shape[1]}x{in_shape[2]} image away to nothing: "
                "use fewer stages or model.pool=none"
            )
        flat = width * rows * cols
        head: list[nn.Module] = [nn.Flatten()]
        for size in hidden:
            head += [nn.Linear(flat, size), make_activation(activation)]
            flat = size
        if dropout:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(flat, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


def feature_side(side: int, stages: int, convs_per_stage: int, kernel_size: int, pooled: bool) -> int:
    """An image side after the stages: each conv (padding kernel_size // 2) adds 1 - kernel_size % 2, each
    pool halves it, rounding down; 0 once a pool meets a side of 1, where torch would fail on a tensor."""
    for _ in range(stages):
        side += convs_per_stage * (1 - kernel_size % 2)
        if pooled:
            if side < 2:
                return 0
            side //= 2
    return side
