"""`test/saliency`: the most confident test mistakes and a few right answers, each beside its saliency and Grad-CAM."""

from __future__ import annotations

from typing import Annotated

from visionlab.checks import Switch
from visionlab.reporting.pictures.picture import Evaluation, Picture
from visionlab.reporting.saliency import saliency_picture


class Saliency(Picture):
    """Once at the end, of the test pass's shared mistakes; for a model whose scores have gradients (not votes)."""

    shows_input = True
    called = "saliency"

    def __init__(self, saliency: Annotated[bool, Switch()] = True):
        self.on = saliency

    def applies(self) -> bool:
        return super().applies() and not self.subject.votes

    def wants(self, epoch: int | None) -> bool:
        return epoch is None and self.on

    def finish(self, test: Evaluation) -> None:
        if not self.on or test.mistakes is None:
            return
        image = saliency_picture(self.subject.model, test.data, test.mistakes.mistakes()[0], self.classes)
        if image is not None:
            self.reporter.image("test/saliency", image, test.step)
