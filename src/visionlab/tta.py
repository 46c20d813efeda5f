"""Test-time augmentation: a model's class scores averaged over mirrored (and shifted) copies of each image.

airbench's flip TTA: the logits of an image and of its left-right mirror, averaged. `flip_translate`
adds airbench's second level: the same pair for the image shifted one pixel up-left and one down-right
(reflect-padded), which count half: 0.5 x flip(x) + 0.25 x flip(up-left) + 0.25 x flip(down-right).
Only for evaluation: CIFAR-like images whose classes do not change when mirrored.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.checks import OneOf

TTA_MODES = ("none", "flip", "flip_translate")
TTAMode = Annotated[str, OneOf(*TTA_MODES)]  # a `tta` setting


class ViewAverage(nn.Module):
    """Wraps a model; its forward returns the averaged scores `[N, C]` (eval() and train() reach the model)."""

    def __init__(self, model: nn.Module, mode: TTAMode = "flip"):
        super().__init__()
        self.model = model
        self.translate = mode == "flip_translate"

    def _flip(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.model(x) + self.model(x.flip(-1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self._flip(x)
        if not self.translate:
            return scores
        h, w = x.shape[-2:]
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        shifted = 0.5 * (self._flip(padded[..., :h, :w]) + self._flip(padded[..., 2:, 2:]))
        return 0.5 * scores + 0.5 * shifted


def with_tta(model: nn.Module, mode: TTAMode) -> nn.Module:
    """The model to evaluate with: itself for `none`, else wrapped."""
    return model if mode == "none" else ViewAverage(model, mode)
