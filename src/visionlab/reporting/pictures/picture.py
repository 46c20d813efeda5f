"""What every picture is: a class with a few hooks at the run's fixed points (docs/pictures.md, "How to add a picture").

A picture is told what it pictures (a `Subject`: the model, its data, how it decides) and says
from that alone whether it applies; it never asks what type the model or the splits are. Its
settings are its `__init__`'s keyword arguments, named as the `logging.` keys that set them and
declared with checks.py's rules, so a bad value fails before any data loads, in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from visionlab.checks import Whole
from visionlab.data import DeviceSplit, Splits
from visionlab.reporting.reporter import Reporter

if TYPE_CHECKING:
    from visionlab.reporting.pictures.mistake_finder import MistakeFinder

Watch = Callable[[Tensor, Tensor], None]  # sees every (scores, labels) batch of an evaluation
EVERY = Whole(0, unit="epochs")  # "every N epochs" settings; 0: never


@dataclass(frozen=True)
class Subject:
    """What the pictures picture: one partition's model and data, and how the model decides.

    The run describes it once (experiment.py); pictures read it and never the model's type.
    """

    model: nn.Module
    splits: Splits
    epochs: int  # the last epoch, at which every "every N epochs" picture is drawn
    on_features: bool  # the model sees feature vectors, not images: no picture shows its input as images
    votes: bool = False  # its scores are vote shares (a memorizing learner, kNN): no gradients, confidence = share
    neighbours: Callable[[Tensor, int], tuple[Tensor, Tensor]] | None = None  # its search: (queries, k) -> (d, index)
    # how many of those neighbours vote (kNN's k), asked when drawn: a memorizing learner picks it on val
    voters: Callable[[], int | None] | None = None


@dataclass(frozen=True)
class Evaluation:
    """One evaluate() pass the pictures draw from: val after `epoch`, or test (epoch None) once at the end."""

    split: str  # "val" or "test": the first part of the pictures' tags
    data: DeviceSplit
    step: int
    result: dict[str, Any]  # evaluate()'s: acc, loss, and the confusion matrix
    epoch: int | None = None
    mistakes: MistakeFinder | None = None  # its most confident mistakes, when a picture asked for them (`wants`)

    @property
    def after(self) -> str:
        """A picture title's ", epoch 3" (val and weights, after an epoch) or nothing (test, once at the end)."""
        return "" if self.epoch is None else f", epoch {self.epoch}"


def is_due(every: int, epoch: int, last: int) -> bool:
    """Every `every` epochs and at the last one, so the final model is always pictured; 0: never."""
    return every > 0 and (epoch % every == 0 or epoch == last)


class Picture:
    """One picture of a run (or one kind of picture, such as the val and test confusion matrices).

    Every hook does nothing unless a picture overrides it. PictureLog (log.py) calls them, with the
    pictures' cost timed, under `torch.inference_mode()` and with a compiled model run eagerly:
    - `start()`: once, before training (not again on resume);
    - `wants(epoch)` and `watch(epoch)`: before each val evaluation (after `epoch`) and the test one (None);
    - `end_epoch(val)`: after each epoch's val pass; `finish(test)`: after the test pass.
    """

    # It draws the model's input as images: off where the model sees feature vectors (the log line names it `called`).
    shows_input: ClassVar[bool] = False
    called: ClassVar[str] = ""
    # Left out of conf/logging/default.yaml on purpose: a run draws it when a config lists it (tests check the rest is).
    optional: ClassVar[bool] = False

    subject: Subject
    reporter: Reporter

    def bind(self, subject: Subject, reporter: Reporter) -> None:
        """What it pictures and where it writes: given by PictureLog before `applies` and any hook."""
        self.subject = subject
        self.reporter = reporter

    @property
    def classes(self) -> list[str]:
        return list(self.subject.splits.classes)

    def due(self, every: int, epoch: int) -> bool:
        return is_due(every, epoch, self.subject.epochs)

    def applies(self) -> bool:
        """Whether it can picture this subject at all; a picture that does not is dropped for the partition."""
        return not (self.shows_input and self.subject.on_features)

    def start(self) -> None:
        pass

    def wants(self, epoch: int | None) -> bool:
        """Whether it draws the coming evaluation's most confident mistakes (val after `epoch`; test: None):
        PictureLog then keeps them, once for every picture that asks, in `Evaluation.mistakes`."""
        return False

    def watch(self, epoch: int | None) -> Watch | None:
        """Something of its own to show the coming evaluation's batches to (val after `epoch`; test: None)."""
        return None

    def end_epoch(self, val: Evaluation) -> None:
        pass

    def finish(self, test: Evaluation) -> None:
        pass
