"""Data augmentation on whole training batches, on the device: one gather or one grid_sample per batch.

It runs after normalization, so empty borders are 0: the dataset's mean colour. Each image
gets its own random shift and flip; there is no per-sample Python and no PIL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from visionlab.checks import Number, Switch, Whole


@dataclass
class Augment:
    """`dataset.augment`: everything off by default; the loop applies it to training batches only."""

    # pad by this many pixels, then take a random crop of the original size
    crop_padding: Annotated[int, Whole(0, unit="pixels")] = 0
    flip: Annotated[bool, Switch()] = False  # mirror left-right with probability 1/2
    # shift by up to this fraction of the width/height, with bilinear resampling
    translate: Annotated[float, Number(ge=0, lt=1, example=0.1)] = 0.0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.crop_padding:
            images = random_crop(images, self.crop_padding, flip=self.flip)
        elif self.flip:
            images = random_flip(images)
        if self.translate:
            images = random_translate(images, self.translate)
        return images


def random_crop(images: torch.Tensor, padding: int, flip: bool = False) -> torch.Tensor:
    """Zero-pad every side, then cut an HxW window at a random offset per image (one gather).

    With `flip`, that gather also mirrors about half the windows: the same images, from the same
    random numbers, as random_flip after it, for one pass over the batch instead of three.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding)).flatten(2)  # [N, C, (H+2p)(W+2p)]
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), device=images.device)
    rows = dy + torch.arange(h, device=images.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=images.device).view(1, 1, w)
    if flip:
        mirrored = torch.rand(n, 1, 1, device=images.device) < 0.5
        cols = torch.where(mirrored, 2 * dx + w - 1 - cols, cols)  # column x reads dx + (w - 1 - x)
    index = (rows * (w + 2 * padding) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w)


def random_flip(images: torch.Tensor) -> torch.Tensor:
    flip = torch.rand(len(images), 1, 1, 1, device=images.device) < 0.5
    return torch.where(flip, images.flip(3), images)


def random_translate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Shift each image by a uniform random (dx, dy) in [-fraction, fraction] of its size."""
    n = len(images)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # The sampling grid spans [-1, 1], so a shift of `fraction` of the image is 2 * fraction there.
    theta[:, :, 2] = (torch.rand(n, 2, device=images.device, dtype=images.dtype) * 2 - 1) * 2 * fraction
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
