"""What reporting hears of training: fit()'s callbacks for the scalars, the log, the bar and the pictures."""

from __future__ import annotations

import math
from typing import Any

import torch

from visionlab.optimization import current_lr
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.visual_log import VisualLog
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
    def __init__(self, visuals: VisualLog):
        self.visuals = visuals

    def watch(self, epoch: int) -> Watch | None:
        return self.visuals.watch(epoch)

    def after_epoch(
        self, state: TrainingState, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]
    ) -> None:
        self.visuals.end_epoch(epoch, state.at.step, val)
