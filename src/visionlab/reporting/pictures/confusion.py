"""`val/confusion_matrix`, `test/confusion_matrix` and the scalars `<split>/per_class_acc/<class>`."""

from __future__ import annotations

import re
from typing import Annotated

import torch

from visionlab.reporting import visuals
from visionlab.reporting.pictures.picture import EVERY, Evaluation, Picture


def tag_name(name: str) -> str:
    """A class name as one TensorBoard tag component ("0 - zero" -> "0_-_zero")."""
    return re.sub(r"[\s/]+", "_", name.strip())


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Each true class's share of correct predictions; None for a class with no images in the split."""
    totals = confusion.sum(1)
    return [None if total == 0 else (confusion[c, c] / total).item() for c, total in enumerate(totals.tolist())]


class Confusion(Picture):
    """Out of the matrix evaluate() counts anyway: val every N epochs, test's once at the end (unless 0)."""

    def __init__(self, confusion_every_n_epochs: Annotated[int, EVERY] = 1):
        self.every = confusion_every_n_epochs

    def end_epoch(self, val: Evaluation) -> None:
        if self.due(self.every, val.epoch):
            self.draw(val)

    def finish(self, test: Evaluation) -> None:
        if self.every:
            self.draw(test)

    def draw(self, seen: Evaluation) -> None:
        confusion = seen.result["confusion"]
        accuracy = confusion.trace().item() / max(confusion.sum().item(), 1)
        title = f"{seen.split} confusion matrix{seen.after}: acc {accuracy:.4f}"
        self.reporter.image(
            f"{seen.split}/confusion_matrix", visuals.confusion_picture(confusion, self.classes, title), seen.step
        )
        self.reporter.scalars(
            {
                f"{seen.split}/per_class_acc/{tag_name(name)}": acc
                for name, acc in zip(self.classes, per_class_accuracy(confusion))
            },
            seen.step,
        )
