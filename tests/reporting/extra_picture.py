"""A picture that is not visionlab's: what a course's own picture looks like, listed by a config of its own.

tests/reporting/test_picture_list.py lists it with one YAML line (`--config-dir`, or `+logging.pictures.dots...`
on the command line) and checks that a real run draws it: the run imports it by its `_target_`.
"""

from __future__ import annotations

from typing import Annotated

import torch

from visionlab.checks import Whole
from visionlab.reporting.pictures.picture import Evaluation, Picture


class Dots(Picture):
    """A `side` x `side` grey square at the start, and each evaluation's accuracy as a scalar."""

    def __init__(self, side: Annotated[int, Whole(1)] = 4):
        self.side = side

    def start(self) -> None:
        self.reporter.image("extra/dots", torch.full((3, self.side, self.side), 128, dtype=torch.uint8), 0)

    def end_epoch(self, val: Evaluation) -> None:
        self.reporter.scalars({"extra/val_acc": val.result["acc"]}, val.step)

    def finish(self, test: Evaluation) -> None:
        self.reporter.scalars({"extra/test_acc": test.result["acc"]}, test.step)
