"""`lr_find=true`: the learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find).

fit() trains the run's own model, loss and optimizer on the train split only, while this callback
sets the learning rate of step i to `min_lr * (max_lr / min_lr) ** (i / (steps - 1))` and records
the loss; it ends once `steps` are done or the smoothed loss passes `diverge_factor` times its
lowest. The suggestion is the learning rate at the lowest smoothed loss divided by 10: at the
minimum the loss is about to blow up, so a tenth of it is the largest rate still safely on the
falling slope (fastai's original "lr_min / 10" rule; the steepest point is noisier to find).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch

from visionlab.checks import Number, Whole
from visionlab.reporting import visuals
from visionlab.training.callbacks import Callback, EndTraining
from visionlab.training.state import TrainingState

SKIP_START = 5  # the first steps' loss says more about the initial weights than about the lr


@dataclass
class RangeTest:
    min_lr: Annotated[float, Number(gt=0, example=1e-7)] = 1e-7
    max_lr: Annotated[float, Number(gt=0, example=10.0)] = 10.0
    steps: Annotated[int, Whole(10, unit="steps")] = 200
    smoothing: Annotated[float, Number(ge=0, lt=1, example=0.9)] = 0.9  # of the loss's moving average
    diverge_factor: Annotated[float, Number(gt=1, example=4.0)] = 4.0


@dataclass
class RangeRecord(Callback):
    test: RangeTest
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    average: float = 0.0  # the loss's moving average, before debiasing

    def lr_at(self, step: int) -> float:
        return self.test.min_lr * (self.test.max_lr / self.test.min_lr) ** (step / (self.test.steps - 1))

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        set_lr(state.optimizer, self.lr_at(state.at.step))

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        value = loss.item()
        self.lrs.append(self.lr_at(state.at.step - 1))
        self.losses.append(value)
        beta = self.test.smoothing
        self.average = beta * self.average + (1 - beta) * value
        self.smoothed.append(self.average / (1 - beta ** len(self.losses)))  # debiased, as Adam's moments are
        lowest = min(self.smoothed[SKIP_START:] or self.smoothed)
        if not math.isfinite(value) or state.at.step >= self.test.steps or self.smoothed[-1] > self.test.diverge_factor * lowest:
            raise EndTraining({})
        set_lr(state.optimizer, self.lr_at(state.at.step))

    def suggestion(self) -> tuple[float, float]:
        """(suggested lr, the lr at the lowest smoothed loss)."""
        considered = range(min(SKIP_START, len(self.smoothed) - 1), len(self.smoothed))
        at_min = min(considered, key=lambda i: self.smoothed[i])
        return self.lrs[at_min] / 10, self.lrs[at_min]

    def chart(self, suggested: float) -> torch.Tensor:
        image, _ = visuals.line_chart(
            self.lrs, self.smoothed, log_x=True, markers=False, mark=(suggested, f"suggested lr {suggested:.3g}"),
            title=f"learning-rate range test: {len(self.lrs)} steps; suggested: the lowest loss's lr / 10",
            x_label="learning rate (log scale)", y_label="training loss (smoothed)",
        )
        return image


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
