"""What reporting hangs on fit(): the scalars, log and bar (`Progress`), and the pictures (`Pictures`).

Both implement training/callbacks.py's `Callback` hooks (all four, each a no-op where it has nothing
to do) without subclassing it: training/ still imports reporting/ (loop.memorize's Reporter,
lr_find's charts), and packages import in one direction only (docs/architecture.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from visionlab.optimization import current_lr
from visionlab.reporting.pictures.log import PictureLog
from visionlab.reporting.pictures.picture import Watch
from visionlab.reporting.reporter import Reporter


class Progress:
    """Scalars, the log and the progress bar; the loss it reads every N steps doubles as a divergence check."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def start_epoch(self, state: Any, steps: int) -> None:
        self.reporter.start_epoch(state.at.epoch, steps, done=state.at.batch)

    def after_step(self, state: Any, loss: torch.Tensor, images: int) -> None:
        shown = self.reporter.step(state.at.epoch, state.at.step, loss, images, lr=current_lr(state.optimizer))
        if shown is not None and not math.isfinite(shown):
            raise state.diverged(shown)

    def watch(self, epoch: int) -> Watch | None:
        return None

    def after_epoch(self, state: Any, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]) -> None:
        self.reporter.end_epoch(epoch, state.at.step, metrics)


class Pictures:
    """The partition's PictureLog at each epoch's val pass: what it watches, then what it draws."""

    def __init__(self, pictures: PictureLog):
        self.pictures = pictures

    def start_epoch(self, state: Any, steps: int) -> None:
        pass

    def after_step(self, state: Any, loss: torch.Tensor, images: int) -> None:
        pass

    def watch(self, epoch: int) -> Watch | None:
        return self.pictures.watch(epoch)

    def after_epoch(self, state: Any, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]) -> None:
        self.pictures.end_epoch(epoch, state.at.step, val)
