"""A fully connected network: Linear -> [BatchNorm] -> activation -> [Dropout], per hidden layer."""

from __future__ import annotations

import math
from typing import Annotated

from torch import nn

from visionlab.checks import Switch
from visionlab.models.blocks import Activation, Dropout, Hidden
from visionlab.models.blocks import activation as make_activation


class MLP(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        hidden: Hidden = (512,),
        activation: Activation = "relu",
        dropout: Dropout = 0.0,
        batchnorm: Annotated[bool, Switch()] = False,
    ):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = math.prod(in_shape)
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batchnorm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(make_activation(activation))
            if dropout:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
