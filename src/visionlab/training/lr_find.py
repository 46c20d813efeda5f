"""`lr_find=true`: the learning-rate range test (Smith 2017, "Cyclical learning rates"; fastai's lr_find).

fit() trains the run's own model, loss and optimizer on the train split only, while this callback
sets the learning rate of step i to `min_lr * (max_lr / min_lr) ** (i / (steps - 1))` and records
the loss; it ends once `steps` are done or the running (smoothed) loss passes `diverge_factor` times
its lowest. The default is 36 steps, 7 per decade: a tenth of a one-epoch MNIST run (BENCHMARKS.md).

The suggestion comes from the curve smoothed forwards and then backwards (zero phase): a running
average alone lags, by about 1 / (1 - smoothing) steps, which with few steps is a large part of a
decade and puts its lowest point past the real one. Where the smoothed loss is lowest is the edge:
the largest lr at which the loss still falls. A schedule that warms up (the default cosine, onecycle)
can peak there, as Smith's one-cycle does ("super-convergence", 2018): its first steps are the range
test's own climb, and it anneals afterwards. So that lr is the suggestion; a schedule that starts at
its peak (none, step, exponential, cosine without warm-up) gets a tenth of it, fastai's original
rule for staying safely on the falling slope from the first step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import torch

from visionlab.checks import Number, Whole
from visionlab.errors import UserError
from visionlab.optimization import Schedule
from visionlab.training.callbacks import Callback, EndTraining
from visionlab.training.state import TrainingState

SKIP_START = 3  # the first steps' loss says more about the initial weights than about the lr
NO_WARMUP_SHARE = 0.1  # of the edge, for a schedule that starts at its peak


@dataclass
class RangeTest:
    min_lr: Annotated[float, Number(gt=0, example=1e-4)] = 1e-4
    max_lr: Annotated[float, Number(gt=0, example=10.0)] = 10.0
    steps: Annotated[int, Whole(10, unit="steps")] = 36
    smoothing: Annotated[float, Number(ge=0, lt=1, example=0.6)] = 0.6  # of the loss's moving average
    diverge_factor: Annotated[float, Number(gt=1, example=4.0)] = 4.0

    def __post_init__(self) -> None:
        """The test raises the lr from min_lr to max_lr: a range that falls or is empty suggests nothing."""
        if self.min_lr >= self.max_lr:
            raise UserError(
                f"lr_range.min_lr={self.min_lr:g} is not below lr_range.max_lr={self.max_lr:g}: the range "
                "test raises the lr from min_lr to max_lr, so give a smaller min_lr (the defaults are 0.0001 and 10)"
            )


@dataclass
class RangeRecord(Callback):
    test: RangeTest
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    running: list[float] = field(default_factory=list)  # the debiased moving average, as the divergence check sees it
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
        self.running.append(self.average / (1 - beta ** len(self.losses)))  # debiased, as Adam's moments are
        lowest = min(self.running[SKIP_START:] or self.running)
        if (
            not math.isfinite(value)
            or state.at.step >= self.test.steps
            or self.running[-1] > self.test.diverge_factor * lowest
        ):
            raise EndTraining({})
        set_lr(state.optimizer, self.lr_at(state.at.step))

    def smoothed(self) -> list[float]:
        """The running average run once more from the last step back: the same smoothing, without its lag.

        Up to the first loss that is not finite (the last one recorded, if any), which would spread backwards.
        """
        finite = next((i for i, value in enumerate(self.losses) if not math.isfinite(value)), len(self.losses))
        return zero_phase(self.losses[:finite], self.test.smoothing)

    def edge(self) -> float:
        """The lr at the lowest smoothed loss, past the first steps."""
        curve = self.smoothed()
        if not curve:
            raise UserError(
                f"lr_find: the loss was {self.losses[0]} at the first step, before any learning rate had acted: "
                "the data or the model gives it (a nan or inf pixel, a feature that divides by zero)"
            )
        considered = range(min(SKIP_START, len(curve) - 1), len(curve))
        return self.lrs[min(considered, key=lambda i: curve[i])]


def suggestion(edge: float, warmup: bool) -> tuple[float, str]:
    """(the suggested lr, its rule in words): the edge for a schedule that warms up, a tenth of it otherwise."""
    if warmup:
        return edge, "the lowest smoothed loss's lr (the schedule warms up)"
    return edge * NO_WARMUP_SHARE, "the lowest smoothed loss's lr / 10 (the schedule starts at its peak)"


def warms_up(schedule: Callable[..., Schedule], epochs: int, steps_per_epoch: int) -> bool:
    """Whether the run's schedule rises during its first epoch, asked of the schedule itself on a stand-in optimizer."""
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    stepped = schedule(probe, epochs=epochs, steps_per_epoch=steps_per_epoch)
    first = probe.param_groups[0]["lr"]
    for _ in range(steps_per_epoch):
        probe.step()
        stepped.after_step()
        if probe.param_groups[0]["lr"] > first:
            return True
    return False


def zero_phase(values: list[float], beta: float) -> list[float]:
    """An exponential moving average forwards, then backwards over that, debiased both ways."""

    def running(series: list[float]) -> list[float]:
        out, average = [], 0.0
        for count, value in enumerate(series, 1):
            average = beta * average + (1 - beta) * value
            out.append(average / (1 - beta**count))
        return out

    return running(running(values)[::-1])[::-1]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
