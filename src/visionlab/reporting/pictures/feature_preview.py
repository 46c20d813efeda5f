"""`features/hog_cells`, `features/<name>_codebook`: what the features see, in place of the data preview."""

from __future__ import annotations

from typing import Annotated

from visionlab.checks import Switch
from visionlab.reporting.feature_pictures import feature_pictures
from visionlab.reporting.pictures.picture import Picture


class FeaturePreview(Picture):
    """HOG's cells as oriented lines beside the first training images, a bag of words' codebook.
    The data preview's switch: it takes that picture's place when the model sees feature vectors."""

    def __init__(self, data_preview: Annotated[bool, Switch()] = True):
        self.on = data_preview

    def applies(self) -> bool:
        return self.subject.on_features

    def start(self) -> None:
        if not self.on:
            return
        splits = self.subject.splits
        for tag, image in feature_pictures(splits.features, splits.examples).items():
            self.reporter.image(tag, image, 0)
