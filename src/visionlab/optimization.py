"""Learning-rate schedules. Each builder decides whether it steps per batch or per epoch.

A scheduler YAML is `_partial_`; the run calls it with the optimizer and the run's length.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from visionlab.checks import Each, Maybe, Number, Switch, Whole
from visionlab.errors import UserError

EPOCHS = Whole(1, unit="epochs")
FACTOR = Number(gt=0, lt=1, example=0.1)  # what the lr is multiplied by


@dataclass
class Schedule:
    scheduler: LRScheduler
    interval: str  # "step": after every optimizer step; "epoch": after every epoch
    monitor: str | None = None  # a key of the val metrics the scheduler reacts to (plateau: "loss")

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, val_metrics: dict[str, float]) -> None:
        if self.interval != "epoch":
            return
        if self.monitor:
            self.scheduler.step(val_metrics[self.monitor])
        else:
            self.scheduler.step()


def constant(optimizer: Optimizer, epochs: int, steps_per_epoch: int) -> Schedule:
    """`scheduler=none`: the optimizer's lr throughout."""
    return Schedule(ConstantLR(optimizer, factor=1.0, total_iters=0), "epoch")


def cosine(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: Annotated[float, Number(ge=0, example=0.2)] = 0.0,
    min_lr_ratio: Annotated[float, Number(ge=0, le=1)] = 0.0,
    restart_every_epochs: Annotated[int | None, Maybe(EPOCHS)] = None,
) -> Schedule:
    """Linear warmup from 1% of lr, then half a cosine down to min_lr_ratio * lr, stepped per batch.

    With restart_every_epochs, the cosine starts again from lr every so many epochs (SGDR, Loshchilov
    and Hutter 2017), so the weights at the end of each cycle are annealed ones: with early stopping,
    the run can end after any cycle and still test a model trained to the bottom of its schedule.
    """
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total - 1)
    base_lr = optimizer.param_groups[0]["lr"]
    if restart_every_epochs is not None:
        return Schedule(
            LambdaLR(
                optimizer,
                functools.partial(
                    _cosine_cycles,
                    warmup=warmup,
                    cycle=max(restart_every_epochs * steps_per_epoch, warmup + 1),
                    floor=min_lr_ratio,
                ),
            ),
            "step",
        )
    decay = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=base_lr * min_lr_ratio)
    if warmup == 0:
        return Schedule(decay, "step")
    ramp = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return Schedule(SequentialLR(optimizer, [ramp, decay], milestones=[warmup]), "step")


def _cosine_cycles(step: int, warmup: int, cycle: int, floor: float) -> float:
    """The lr factor at `step`: the warmup's ramp, then cosine cycles of `cycle` steps (the first one shortened by the
    warmup, so that every cycle ends where the schedule says it does)."""
    if step < warmup:
        return 0.01 + 0.99 * step / warmup
    done = (step - warmup) / (cycle - warmup) if step < cycle else (step - cycle) % cycle / cycle
    return floor + (1 - floor) * (1 + math.cos(math.pi * done)) / 2


def step(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    step_size: Annotated[int, EPOCHS] = 2,
    gamma: Annotated[float, FACTOR] = 0.5,
) -> Schedule:
    """Step decay: multiply the lr by gamma every step_size epochs."""
    return Schedule(StepLR(optimizer, step_size=step_size, gamma=gamma), "epoch")


def multistep(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    milestones: Annotated[Sequence[int], Each(EPOCHS, example="[2, 4]")] = (2, 4),
    gamma: Annotated[float, FACTOR] = 0.1,
) -> Schedule:
    """Multiply the lr by gamma at each milestone epoch (the classic "divide by 10 at epochs 30, 60")."""
    milestones = list(milestones)
    if milestones != sorted(set(milestones)):
        raise UserError(f"scheduler.milestones={milestones} is invalid: use increasing epoch numbers, such as [2, 4]")
    return Schedule(MultiStepLR(optimizer, milestones=milestones, gamma=gamma), "epoch")


def exponential(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, gamma: Annotated[float, FACTOR] = 0.8
) -> Schedule:
    """Exponential decay: lr_e = lr * gamma^e after e epochs."""
    return Schedule(ExponentialLR(optimizer, gamma=gamma), "epoch")


def onecycle(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    pct_start: Annotated[float, Number(gt=0, lt=1, example=0.3)] = 0.3,
    div_factor: Annotated[float, Number(gt=0, example=25)] = 25.0,
    final_div_factor: Annotated[float, Number(gt=0, example=1e4)] = 1e4,
    cycle_momentum: Annotated[bool, Switch()] = True,
) -> Schedule:
    """One cycle per run, stepped per batch: lr / div_factor up to the optimizer's lr over the first
    pct_start of the run, then cosine down to lr / (div_factor * final_div_factor).

    With cycle_momentum, momentum (or Adam's beta1) moves 0.95 -> 0.85 -> 0.95 against the lr; it is
    left alone for optimizers without momentum, so plain SGD stays plain.
    """
    defaults = optimizer.defaults
    has_momentum = "betas" in defaults or defaults.get("momentum", 0) > 0
    scheduler = OneCycleLR(
        optimizer,
        max_lr=[group["lr"] for group in optimizer.param_groups],
        total_steps=max(epochs * steps_per_epoch, 2),
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
        cycle_momentum=bool(cycle_momentum) and has_momentum,
    )
    return Schedule(scheduler, "step")


def piecewise(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    start: Annotated[float, Number(ge=0, example=0.2)] = 0.2,
    peak_at: Annotated[float, Number(ge=0, lt=1, example=0.23)] = 0.23,
    end: Annotated[float, Number(ge=0, example=0.07)] = 0.07,
) -> Schedule:
    """Straight lines through (0, start), (peak_at of the run, 1) and (its last step, end), times the optimizer's
    lr, stepped per batch: airbench's schedule (0.2 -> 1 over 23% of the steps -> 0.07). Unlike onecycle's
    cosine halves it spends no steps near the peak or near the end."""
    total = max(epochs * steps_per_epoch, 1)
    return Schedule(
        LambdaLR(
            optimizer, functools.partial(_piecewise, peak=int(peak_at * total), total=total, start=start, end=end)
        ),
        "step",
    )


def _piecewise(step: int, peak: int, total: int, start: float, end: float) -> float:
    if step < peak:
        return start + (1 - start) * step / peak
    return 1 + (end - 1) * min((step - peak) / max(total - peak, 1), 1)


def plateau(
    optimizer: Optimizer,
    epochs: int,
    steps_per_epoch: int,
    factor: Annotated[float, FACTOR] = 0.1,
    patience: Annotated[int, Whole(0, unit="epochs")] = 2,
    threshold: Annotated[float, Number(ge=0, example=1e-4)] = 1e-4,
    min_lr: Annotated[float, Number(ge=0)] = 0.0,
) -> Schedule:
    """Multiply the lr by factor when val/loss has not improved for `patience` epochs."""
    scheduler = ReduceLROnPlateau(
        optimizer,
        mode="min",
        factor=factor,
        patience=patience,
        threshold=threshold,
        min_lr=min_lr,
    )
    return Schedule(scheduler, "epoch", monitor="loss")


def current_lr(optimizer: Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
