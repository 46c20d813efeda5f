"""`data/train_preview`: the first training images of each class, one row per class, at the start."""

from __future__ import annotations

from typing import Annotated

from visionlab.checks import Switch
from visionlab.reporting import visuals
from visionlab.reporting.pictures.picture import Picture

PREVIEW_PER_CLASS = 8  # training images per class


class DataPreview(Picture):
    """As stored: before normalization, so the input is checked before it is trained on."""

    shows_input = True
    called = "data preview"

    def __init__(self, data_preview: Annotated[bool, Switch()] = True):
        self.on = data_preview

    def start(self) -> None:
        if not self.on:
            return
        train = self.subject.splits.train
        rows = visuals.first_per_class(train.labels.cpu(), len(self.classes), PREVIEW_PER_CLASS)
        tiles = train.images[rows.clamp_min(0).flatten().to(train.images.device)].cpu().float() / 255
        tiles[rows.flatten() < 0] = 1.0  # a class with fewer images gets blank tiles
        image = visuals.picture(
            tiles,
            PREVIEW_PER_CLASS,
            title="the first training images of each class, raw pixels (before normalization)",
            row_labels=self.classes,
        )
        self.reporter.image("data/train_preview", image, 0)
