"""Datasets as uint8 tensors, split and normalized once, batched by index on the device."""

from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.data.splits import DeviceSplit, Splits, holdout_indices, make_splits

__all__ = ["ImageDataset", "LabeledImages", "RawData", "DeviceSplit", "Splits", "holdout_indices", "make_splits"]
