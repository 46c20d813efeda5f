"""Train/val/test as standardized feature vectors, batched by the same DeviceSplit as images.

A DeviceSplit normalizes each batch with `scale` and `shift`; for features they are per number:
1/std and -mean/std of the train part alone. So batching, evaluation and kNN work unchanged,
and the stored vectors stay as computed (and as cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from visionlab.data import DeviceSplit, RawData, Splits

if TYPE_CHECKING:
    from visionlab.features.base import Features


@dataclass
class FeatureSplits(Splits):
    """Splits whose rows are feature vectors `[N, D]`; mean and std are per feature, from the train part.

    `features` and `examples` (the first training images, uint8) let the pictures show what the vectors hold.
    """

    features: Features
    examples: torch.Tensor


def feature_splits(
    features: Features,
    raw: RawData,
    train_features: torch.Tensor,
    test_features: torch.Tensor,
    train_index: torch.Tensor,
    val_index: torch.Tensor,
    examples: int = 8,
) -> FeatureSplits:
    """Carve train and val out of the official train split's features; standardize all three with train's statistics."""
    device = train_features.device
    train = train_features[train_index.to(device)]
    std, mean = torch.std_mean(train.double(), dim=0, correction=0)
    # a constant feature is only centred, as scikit-learn's StandardScaler
    std = torch.where(std > 0, std, torch.ones_like(std))
    scale = (1.0 / std).float().view(1, -1)
    shift = (-mean / std).float().view(1, -1)

    def split(rows: torch.Tensor, labels: torch.Tensor) -> DeviceSplit:
        return DeviceSplit(rows, labels.to(device), scale, shift)

    return FeatureSplits(
        split(train, raw.train.labels[train_index]),
        split(train_features[val_index.to(device)], raw.train.labels[val_index]),
        split(test_features, raw.test.labels),
        raw.classes,
        mean.float().cpu(),
        std.float().cpu(),
        features,
        raw.train.images[train_index[:examples]].clone(),
    )
