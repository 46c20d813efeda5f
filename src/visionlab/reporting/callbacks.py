"""What reporting hangs on fit(): the scalars, log and bar (`Progress`), and the pictures (`Pictures`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from visionlab.optimization import current_lr
from visionlab.reporting.pictures.log import PictureLog
from visionlab.reporting.reporter import Reporter
from visionlab.training.callbacks import Callback, Watch
from visionlab.training.state import TrainingState


class Progress(Callback):
    """Scalars, the log and the progress bar; the loss it reads every N steps doubles as a divergence check."""

    def __init__(self, reporter: Reporter):
        self.reporter = reporter

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        self.reporter.start_epoch(state.at.epoch, steps, done=state.at.batch)

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        shown = self.reporter.step(state.at.epoch, state.at.step, loss, images, lr=current_lr(state.optimizer))
        if shown is not None and not math.isfinite(shown):
            raise state.diverged(shown)

    def after_epoch(
        self, state: TrainingState, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]
    ) -> None:
        self.reporter.end_epoch(epoch, state.at.step, metrics)


class Pictures(Callback):
    """The partition's PictureLog at each epoch's val pass: what it watches, then what it draws."""

    def __init__(self, pictures: PictureLog):
        self.pictures = pictures

    def watch(self, epoch: int) -> Watch | None:
        return self.pictures.watch(epoch)

    def after_epoch(
        self, state: TrainingState, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]
    ) -> None:
        self.pictures.end_epoch(epoch, state.at.step, val)
