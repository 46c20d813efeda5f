"""What every dataset config instantiates to, and the raw images it hands over."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch

from visionlab.checks import Maybe, Whole
from visionlab.data.augment import Augment
from visionlab.data.files import DataFiles
from visionlab.errors import UserError


@dataclass
class LabeledImages:
    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class RawData:
    """The official train/test split, before val is carved out and before normalization."""

    train: LabeledImages
    test: LabeledImages
    classes: list[str]
    files: DataFiles | None = None  # what the images were read from, for the data fingerprint; None: made in memory


@dataclass
class ImageDataset:
    """Base of every `conf/dataset/*.yaml` target.

    A new dataset is one subclass with its own fields (root, ...) and `read`, plus one YAML; `read`
    names the files it read in `RawData.files` (`ensure_files` returns them), so runs fingerprint them.
    `train_size`/`test_size` take the first N images of each official split: small runs for
    tests, and the course's "overfit a tiny subset first" check.
    """

    train_size: Annotated[int | None, Maybe(Whole(1))] = None
    test_size: Annotated[int | None, Maybe(Whole(1))] = None
    augment: Augment = field(default_factory=Augment)  # applied by the loop to training batches only

    def read(self) -> RawData:
        raise NotImplementedError

    def load(self) -> RawData:
        raw = self.read()
        return RawData(
            _first(raw.train, self.train_size, "dataset.train_size"),
            _first(raw.test, self.test_size, "dataset.test_size"),
            raw.classes,
            raw.files,
        )


def _first(part: LabeledImages, size: int | None, key: str) -> LabeledImages:
    if size is None:
        return part
    if size > len(part):
        raise UserError(f"{key}={size!r} is out of range: use a whole number from 1 to {len(part)}, or null for all")
    return LabeledImages(part.images[:size], part.labels[:size])
