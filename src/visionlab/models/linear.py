"""The linear classifier s = Wx + b on flattened pixels: each row of W is one class's template."""

from __future__ import annotations

import math
from typing import Annotated

from torch import nn

from visionlab.checks import Switch


class Linear(nn.Module):
    def __init__(self, in_shape: tuple[int, ...], num_classes: int, bias: Annotated[bool, Switch()] = True):
        super().__init__()
        self.fc = nn.Linear(math.prod(in_shape), num_classes, bias=bias)

    def forward(self, x):
        return self.fc(x.flatten(1))
