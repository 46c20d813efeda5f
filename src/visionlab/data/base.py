"""What every dataset config instantiates to, and the raw images it hands over."""

from __future__ import annotations

from collections.abc import Callable
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
class Plan:
    """What a dataset will hand over, as far as it is known before the images are read or decoded:
    what the memory check (budget.py) weighs before any work."""

    shape: tuple[int, int, int]  # C, H, W of every image (3 channels where the files decide and are not yet read)
    train: int  # images in the official train split (after train_size)
    test: int
    classes: int
    size_key: str | None = None  # the setting that sets the image size, if the dataset has one ("dataset.size")
    reading: int = 0  # bytes that reading takes beyond the uint8 images (drawing in float32, say)


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

    def plan(self) -> Plan | None:
        """What read() will return, found without reading the images; None: only reading tells."""
        return None

    def load(self, check: Callable[[Plan], None] = lambda plan: None) -> RawData:
        """The images, once `check` has passed their plan: before reading them where the dataset can tell,
        else just after."""
        plan = self.plan()
        if plan is not None:
            check(
                Plan(
                    plan.shape,
                    min(plan.train, self.train_size or plan.train),
                    min(plan.test, self.test_size or plan.test),
                    plan.classes,
                    plan.size_key,
                    plan.reading,
                )
            )
        raw = self.read()
        raw = RawData(
            _first(raw.train, self.train_size, "dataset.train_size"),
            _first(raw.test, self.test_size, "dataset.test_size"),
            raw.classes,
            raw.files,
        )
        if plan is None:
            check(Plan(tuple(raw.train.images.shape[1:]), len(raw.train), len(raw.test), len(raw.classes)))
        return raw


def _first(part: LabeledImages, size: int | None, key: str) -> LabeledImages:
    if size is None:
        return part
    if size > len(part):
        raise UserError(f"{key}={size!r} is out of range: use a whole number from 1 to {len(part)}, or null for all")
    return LabeledImages(part.images[:size], part.labels[:size])
