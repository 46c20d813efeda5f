"""`test/penultimate` in the Projector tab: the test images' penultimate-layer features, from the test pass."""

from __future__ import annotations

from typing import Annotated

from visionlab.checks import Whole
from visionlab.reporting import embeddings
from visionlab.reporting.pictures.picture import Evaluation, Picture, Watch


class Embedding(Picture):
    """Up to `embedding_points` test images, evenly spaced (0: off); for a model with a layer before its scores."""

    shows_input = True  # thumbnails of the images
    called = "embedding"

    def __init__(self, embedding_points: Annotated[int, Whole(0, unit="points")] = 2000):
        self.points = embedding_points
        self.recorder: embeddings.Penultimate | None = None

    def applies(self) -> bool:
        return super().applies() and embeddings.penultimate_layer(self.subject.model) is not None

    def watch(self, epoch: int | None) -> Watch | None:
        self.recorder = None
        if epoch is None and self.points:
            self.recorder = embeddings.Penultimate(self.subject.model, len(self.subject.splits.test), self.points)
        return self.recorder

    def finish(self, test: Evaluation) -> None:
        if self.recorder is not None:
            self.reporter.embedding(self.recorder, test.data, self.classes, test.step)
            self.recorder = None
