"""Learning-rate schedules. Each builder decides whether it steps per batch or per epoch.

A scheduler YAML is `_partial_`; the run calls it with the optimizer and the run's length.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ConstantLR, CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR


@dataclass
class Schedule:
    scheduler: LRScheduler
    interval: str  # "step": after every optimizer step; "epoch": after every epoch

    def after_step(self) -> None:
        if self.interval == "step":
            self.scheduler.step()

    def after_epoch(self, val_metrics: dict[str, float]) -> None:
        if self.interval == "epoch":
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


def current_lr(optimizer: Optimizer) -> float:
    lr = optimizer.param_groups[0]["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)
