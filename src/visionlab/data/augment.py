"""Data augmentation on whole training batches, on the device: one gather or one grid_sample per batch.

It runs after normalization, so zero-filled borders are 0: the dataset's mean colour. Each image
gets its own random shift and flip; there is no per-sample Python and no PIL.

`flip: alternate` is airbench's scheme: each image gets a random flip in the first epoch and the
opposite one in the next, so over two epochs every image is seen both ways (random flips show
half of them the same way twice). Which images start mirrored is a hash of the run's
seed and the image's index in the training split, so it depends on nothing else: a resumed run
flips as an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated

import torch
import torch.nn.functional as F

from visionlab.checks import Either, Number, OneOf, Switch, Whole
from visionlab.errors import SettingRejected

FLIPS = ("random", "alternate")
PADDING_MODES = ("zeros", "reflect")


@dataclass
class Augment:
    """`dataset.augment`: everything off by default; the loop applies it to training batches only."""

    # pad by this many pixels, then take a random crop of the original size
    crop_padding: Annotated[int, Whole(0, unit="pixels")] = 0
    # mirror left-right: random (each image with probability 1/2 each epoch; true says the same),
    # alternate (airbench's: random in the first epoch, then each image the other way every next epoch), false
    flip: Annotated[bool | str, Either(Switch(), OneOf(*FLIPS))] = False
    # shift by up to this fraction of the width/height, with bilinear resampling
    translate: Annotated[float, Number(ge=0, lt=1, example=0.1)] = 0.0
    # what the crop's padding holds: zeros (the mean colour) or reflect (the image mirrored at its border)
    crop_padding_mode: Annotated[str, OneOf(*PADDING_MODES)] = "zeros"
    # which images start mirrored under flip=alternate: the run's seed (with_seed), not a setting
    seed: int = dataclasses.field(default=0, init=False, compare=False)

    def with_seed(self, seed: int) -> Augment:
        """A copy whose alternating flips start from this seed's pattern."""
        seeded = dataclasses.replace(self)
        seeded.seed = seed
        return seeded

    def __call__(self, images: torch.Tensor, index: torch.Tensor | None = None, epoch: int = 1) -> torch.Tensor:
        """Augment a batch; `index` (the images' places in the training split; default 0..N-1) and `epoch`
        (1 for the first) matter to alternating flips only."""
        flip: bool | torch.Tensor = self.flip in (True, "random")
        if self.flip == "alternate":
            index = torch.arange(len(images), device=images.device) if index is None else index
            flip = alternate_flips(index, epoch, self.seed)
        if self.crop_padding:
            if self.crop_padding_mode == "reflect" and self.crop_padding >= min(images.shape[2:]):
                raise SettingRejected(
                    f"dataset.augment.crop_padding={self.crop_padding} with crop_padding_mode=reflect mirrors more "
                    f"than a {images.shape[2]}x{images.shape[3]} image holds: use a crop_padding under "
                    f"{min(images.shape[2:])}, or crop_padding_mode=zeros"
                )
            images = random_crop(images, self.crop_padding, flip=flip, mode=self.crop_padding_mode)
        elif isinstance(flip, torch.Tensor):
            images = mirror(images, flip)
        elif flip:
            images = random_flip(images)
        if self.translate:
            images = random_translate(images, self.translate)
        return images


def alternate_flips(index: torch.Tensor, epoch: int, seed: int) -> torch.Tensor:
    """Whether each image of `index` is mirrored in `epoch` (1 for the first): a fixed random half of them
    in odd epochs, the other half in even ones."""
    first = mix(index.long() ^ mix(torch.tensor(seed, device=index.device))) & 1  # mirrored in the first epoch
    return (first ^ (epoch - 1) % 2).bool()


def mix(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (two multiply-xorshift rounds), kept under 2**32 so int64 never overflows."""
    x = x & 0xFFFFFFFF
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def random_crop(
    images: torch.Tensor, padding: int, flip: bool | torch.Tensor = False, mode: str = "zeros"
) -> torch.Tensor:
    """Pad every side (zeros, or the image reflected), then cut an HxW window at a random offset per image
    (one gather).

    With `flip`, that gather also mirrors the windows: True, about half of them, from the same random
    numbers as random_flip after it; a [N] bool tensor, those it marks. One pass over the batch
    instead of three.
    """
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4, mode="constant" if mode == "zeros" else mode).flatten(2)
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1, 1), device=images.device)
    rows = dy + torch.arange(h, device=images.device).view(1, h, 1)
    cols = dx + torch.arange(w, device=images.device).view(1, 1, w)
    if flip is True:
        flip = torch.rand(n, device=images.device) < 0.5
    if isinstance(flip, torch.Tensor):
        cols = torch.where(flip.view(n, 1, 1), 2 * dx + w - 1 - cols, cols)  # column x reads dx + (w - 1 - x)
    index = (rows * (w + 2 * padding) + cols).view(n, 1, h * w).expand(n, c, h * w)
    return padded.gather(2, index).view(n, c, h, w)


def mirror(images: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """The images that `flip` ([N] bool) marks, mirrored left-right."""
    return torch.where(flip.view(-1, 1, 1, 1), images.flip(3), images)


def random_flip(images: torch.Tensor) -> torch.Tensor:
    return mirror(images, torch.rand(len(images), device=images.device) < 0.5)


def random_translate(images: torch.Tensor, fraction: float) -> torch.Tensor:
    """Shift each image by a uniform random (dx, dy) in [-fraction, fraction] of its size."""
    n = len(images)
    theta = torch.zeros(n, 2, 3, device=images.device, dtype=images.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # The sampling grid spans [-1, 1], so a shift of `fraction` of the image is 2 * fraction there.
    theta[:, :, 2] = (torch.rand(n, 2, device=images.device, dtype=images.dtype) * 2 - 1) * 2 * fraction
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
