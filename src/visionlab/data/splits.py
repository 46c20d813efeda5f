"""Train/val/test held as uint8 tensors on the training device, normalized batch by batch.

Keeping uint8 on the device costs a quarter of the memory of float32 and makes a batch one
gather plus one fused multiply-add: no per-sample Python, no DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from visionlab.data.base import LabeledImages, RawData
from visionlab.errors import UserError


@dataclass
class DeviceSplit:
    images: torch.Tensor  # uint8 [N, C, H, W] on the device
    labels: torch.Tensor  # int64 [N] on the device
    scale: torch.Tensor  # [1, C, 1, 1]: 1 / (255 * std)
    shift: torch.Tensor  # [1, C, 1, 1]: -mean / std

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalized float images and labels for the given indices.

        index_select, not `images[index]`: it copies whole rows, where indexing goes element by element.
        """
        images = torch.index_select(self.images, 0, index)
        return images.float().mul_(self.scale).add_(self.shift), torch.index_select(self.labels, 0, index)

    def in_order(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The images `start:stop` (all of them by default) in batches of `batch_size`, in order."""
        stop = len(self) if stop is None else stop
        for first in range(start, stop, batch_size):
            index = torch.arange(first, min(first + batch_size, stop), device=self.labels.device)
            yield self.batch(index)


@dataclass
class Splits:
    train: DeviceSplit
    val: DeviceSplit
    test: DeviceSplit
    classes: list[str]
    mean: torch.Tensor  # per channel, in [0, 1] pixel units, from the train part only
    std: torch.Tensor

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def holdout_indices(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random (train, val) partition of range(n)."""
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"split.val_fraction={val_fraction} is out of range: use a number strictly between 0 and 1")
    n_val = round(n * val_fraction)
    if n_val < 1 or n_val >= n:
        raise UserError(
            f"split.val_fraction={val_fraction} leaves {n_val} of {n} images for val: need at least 1 each for train "
            "and val"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def channel_stats(images: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std in [0, 1] units, `chunk` images at a time (default: 8 MB of float64),
    so no float copy of the whole set is made: the run's peak memory stays near the uint8 data's."""
    c = images.shape[1]
    chunk = chunk or max(1, 2**20 // images[0].numel())
    total = torch.zeros(c, dtype=torch.float64)
    squares = torch.zeros(c, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255)
        total += x.sum((0, 2, 3))
        squares += x.square_().sum((0, 2, 3))
    count = images.numel() // c
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(1e-12).sqrt()
    return mean.float(), std.float()


def make_splits(raw: RawData, train_index: torch.Tensor, val_index: torch.Tensor, device: torch.device) -> Splits:
    """Move train/val (carved from raw.train) and test to the device, normalized by train stats."""
    train = LabeledImages(raw.train.images[train_index], raw.train.labels[train_index])
    val = LabeledImages(raw.train.images[val_index], raw.train.labels[val_index])
    mean, std = channel_stats(train.images)
    scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1).to(device)
    shift = (-mean / std).view(1, -1, 1, 1).to(device)

    def on_device(part: LabeledImages) -> DeviceSplit:
        return DeviceSplit(part.images.to(device), part.labels.to(device), scale, shift)

    return Splits(on_device(train), on_device(val), on_device(raw.test), raw.classes, mean, std)
