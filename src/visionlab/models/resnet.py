"""A small CIFAR-style ResNet: a 3x3 stem, stages of residual blocks, global average pooling, one linear layer.

Each stage after the first halves the resolution and widens to its entry of `widths`. The skip
connection lets every block learn a correction to its input, which is what makes depth trainable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from visionlab.checks import Each, Whole


class BasicBlock(nn.Module):
    """relu(x' + F(x)), F = conv3x3-BN-ReLU-conv3x3-BN; x' is x, or a 1x1 conv of it when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.residual = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.residual(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        widths: Annotated[Sequence[int], Each(Whole(1, unit="channels"), example="[16, 32, 64]")] = (16, 32, 64),
        blocks: Annotated[int, Whole(1, unit="residual blocks per stage")] = 2,
    ):
        super().__init__()
        widths = list(widths)
        layers: list[nn.Module] = [
            nn.Conv2d(in_shape[0], widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        width = widths[0]
        for stage, out in enumerate(widths):
            for block in range(blocks):
                layers.append(BasicBlock(width, out, stride=2 if stage > 0 and block == 0 else 1))
                width = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
