"""Learning-rate schedules. Each builder decides whether it steps per batch or per epoch.

A scheduler YAML is `_partial_`; the run calls it with the optimizer and the run's length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    ConstantLR,
    CosineAnnealingLR,
    ExponentialLR,
    LinearLR,
    LRScheduler,
    MultiStepLR,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from visionlab.errors import UserError


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
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, warmup_epochs: float = 0.0, min_lr_ratio: float = 0.0
) -> Schedule:
    """Linear warmup from 1% of lr, then half a cosine down to min_lr_ratio * lr, stepped per batch."""
    total = max(epochs * steps_per_epoch, 1)
    warmup = min(int(round(warmup_epochs * steps_per_epoch)), total - 1)
    base_lr = optimizer.param_groups[0]["lr"]
    decay = CosineAnnealingLR(optimizer, T_max=total - warmup, eta_min=base_lr * min_lr_ratio)
    if warmup == 0:
        return Schedule(decay, "step")
    ramp = LinearLR(optimizer, start_factor=0.01, end_factor=1.0, total_iters=warmup)
    return Schedule(SequentialLR(optimizer, [ramp, decay], milestones=[warmup]), "step")


def step(optimizer: Optimizer, epochs: int, steps_per_epoch: int, step_size: int = 2, gamma: float = 0.5) -> Schedule:
    """Step decay: multiply the lr by gamma every step_size epochs."""
    _whole("step_size", step_size)
    return Schedule(StepLR(optimizer, step_size=step_size, gamma=_factor("gamma", gamma)), "epoch")


def multistep(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, milestones: Sequence[int] = (2, 4), gamma: float = 0.1
) -> Schedule:
    """Multiply the lr by gamma at each milestone epoch (the classic "divide by 10 at epochs 30, 60")."""
    milestones = list(milestones)
    for m in milestones:
        _whole("milestones", m)
    if milestones != sorted(set(milestones)):
        raise UserError(f"scheduler.milestones={milestones} is invalid: use increasing epoch numbers, such as [2, 4]")
    return Schedule(MultiStepLR(optimizer, milestones=milestones, gamma=_factor("gamma", gamma)), "epoch")


def exponential(optimizer: Optimizer, epochs: int, steps_per_epoch: int, gamma: float = 0.8) -> Schedule:
    """Exponential decay: lr_e = lr * gamma^e after e epochs."""
    return Schedule(ExponentialLR(optimizer, gamma=_factor("gamma", gamma)), "epoch")


def onecycle(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, pct_start: float = 0.3,
    div_factor: float = 25.0, final_div_factor: float = 1e4, cycle_momentum: bool = True,
) -> Schedule:
    """One cycle per run, stepped per batch: lr / div_factor up to the optimizer's lr over the first
    pct_start of the run, then cosine down to lr / (div_factor * final_div_factor).

    With cycle_momentum, momentum (or Adam's beta1) moves 0.95 -> 0.85 -> 0.95 against the lr; it is
    left alone for optimizers without momentum, so plain SGD stays plain.
    """
    if isinstance(pct_start, bool) or not isinstance(pct_start, (int, float)) or not 0 < pct_start < 1:
        raise UserError(f"scheduler.pct_start={pct_start!r} is invalid: use a fraction of the run strictly between 0 and 1, such as 0.3")
    defaults = optimizer.defaults
    has_momentum = "betas" in defaults or defaults.get("momentum", 0) > 0
    scheduler = OneCycleLR(
        optimizer, max_lr=[group["lr"] for group in optimizer.param_groups], total_steps=max(epochs * steps_per_epoch, 2),
        pct_start=pct_start, div_factor=div_factor, final_div_factor=final_div_factor,
        cycle_momentum=bool(cycle_momentum) and has_momentum,
    )
    return Schedule(scheduler, "step")


def plateau(
    optimizer: Optimizer, epochs: int, steps_per_epoch: int, factor: float = 0.1, patience: int = 2,
    threshold: float = 1e-4, min_lr: float = 0.0,
) -> Schedule:
    """Multiply the lr by factor when val/loss has not improved for `patience` epochs."""
    if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
        raise UserError(f"scheduler.patience={patience!r} is invalid: use a whole number of epochs of at least 0")
    scheduler = ReduceLROnPlateau(
        optimizer, mode="min", factor=_factor("factor", factor), patience=patience, threshold=threshold, min_lr=min_lr,
    )
    return Schedule(scheduler, "epoch", monitor="loss")


def _whole(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"scheduler.{key}={value!r} is invalid: use a whole number of epochs of at least 1")


def _factor(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise UserError(f"scheduler.{key}={value!r} is invalid: use a factor strictly between 0 and 1, such as 0.1")
    return float(value)


def current_lr(optimizer: Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
