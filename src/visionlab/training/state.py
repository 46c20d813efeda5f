"""What training changes, as one object: a checkpoint is its `state_dict()`, a resume its `load_state_dict()`.

Everything fit() moves forward lives here (weights, optimizer, schedule, gradient scaler, the
order generator, the position down to the batch, the last epoch's metrics, the val history), so
saving it whole and restoring it whole carries a run on at the very next step, bit for bit. The
random-number states are stored as tensors and plain values, so `torch.load(weights_only=True)`
can read them.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from visionlab.errors import Diverged
from visionlab.optimization import Schedule, current_lr
from visionlab.training import distributed
from visionlab.training.lookahead import Lookahead
from visionlab.training.precision import Precision

log = logging.getLogger("visionlab")


@dataclass
class Position:
    """Where training is, down to the batch: enough to carry on with the very next step."""

    epoch: int = 1  # the epoch in progress, or the next to start
    step: int = 0  # optimizer steps taken so far
    batch: int = 0  # batches of `epoch` done; 0: it has not started
    order: torch.Tensor | None = None  # the epoch's permutation of the train split, once started
    sums: list[torch.Tensor] | None = None  # the epoch's running data loss, reg loss and correct count


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    precision: Precision
    order_rng: torch.Generator  # draws each epoch's order of the training images
    at: Position = field(default_factory=Position)
    done: dict[str, dict] = field(default_factory=lambda: {"train": {}, "val": {}})  # the last finished epoch's metrics
    # each finished epoch's metrics: best epoch, early stopping
    history: dict[int, dict[str, float | None]] = field(default_factory=dict)
    lookahead: Lookahead | None = None  # trainer.ema's average of the weights, which a resume must pull toward
    # the model wrapped in DistributedDataParallel on several processes, which the training steps run through
    replicas: nn.Module | None = None

    def state_dict(self) -> dict[str, Any]:
        """On several processes a collective: every rank calls it at the same step. Rank 0's file then holds each
        rank's random states and epoch sums (`ranks`), and `position`'s sums are the whole batch's."""
        at = self.at
        ranks = distributed.each_rank(
            {"rng": rng_states(), "sums": None if at.batch == 0 else [s.cpu() for s in at.sums]}
        )
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict(),
            "scaler": self.precision.state_dict(),  # fp16's loss scale; empty otherwise
            "position": {
                "epoch": at.epoch,
                "step": at.step,
                "batch": at.batch,
                "order": None if at.batch == 0 else at.order.cpu(),
                "sums": None if at.batch == 0 else [distributed.total(s).cpu() for s in at.sums],
            },
            "rng": {**ranks[0]["rng"], "order": self.order_rng.get_state()},
            **({"ranks": ranks} if len(ranks) > 1 else {}),
            "done": {
                split: {k: v for k, v in metrics.items() if k != "confusion"} for split, metrics in self.done.items()
            },
            "history": {epoch: dict(metrics) for epoch, metrics in self.history.items()},
            "lookahead": self.lookahead.state_dict() if self.lookahead else {},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["scaler"])
        self.order_rng.set_state(state["rng"]["order"])
        mine = own_part(state)
        restore_rng_states(mine["rng"])
        p = state["position"]
        self.at = Position(p["epoch"], p["step"], p["batch"])
        if self.at.batch:
            device = next(self.model.parameters()).device
            self.at.order = p["order"].to(device)
            self.at.sums = [s.to(device) for s in mine["sums"]]
        self.done = state["done"]
        self.history = {int(epoch): metrics for epoch, metrics in state["history"].items()}
        if self.lookahead:
            self.lookahead.load_state_dict(state["lookahead"])

    def check_finite(self) -> None:
        """The epoch's loss sum turns nan or inf with the first bad step, so one read covers them all."""
        if self.at.sums is not None:
            value = distributed.total(self.at.sums[0] + self.at.sums[1]).item()  # every rank decides alike
            if not math.isfinite(value):
                raise self.diverged(value)

    def diverged(self, value: float) -> Diverged:
        return Diverged(
            f"training diverged: the loss is {value} by step {self.at.step} (lr {current_lr(self.optimizer):.3g}); "
            "try a smaller optimizer.lr, trainer.grad_clip=1.0, or a scheduler with warmup"
        )


def own_part(state: dict[str, Any]) -> dict[str, Any]:
    """This rank's random states and epoch sums from a checkpoint: its own where the run had as many ranks as now,
    else rank 0 carries on with the run's (the sums of the whole batch) and the others with rank 0's random states
    and nothing summed yet, so the epoch's totals stay right."""
    ranks = state.get("ranks") or [{"rng": state["rng"], "sums": state["position"]["sums"]}]
    if len(ranks) == distributed.world_size():
        return ranks[distributed.rank()]
    log.info(
        "this run trained on %d process%s and carries on with %d: it goes on from the same step, but the batches "
        "are split differently, so it will not end bit for bit as it would have",
        len(ranks),
        "es" * (len(ranks) != 1),
        distributed.world_size(),
    )
    whole = {"rng": ranks[0]["rng"], "sums": state["position"]["sums"]}
    if distributed.is_main():
        return whole
    nothing = None if whole["sums"] is None else [torch.zeros_like(s) for s in whole["sums"]]
    return {"rng": whole["rng"], "sums": nothing}


def rng_states() -> dict[str, Any]:
    """Every global random state a run draws from, as tensors and plain values."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(position),
            "has_gauss": int(has_gauss),
            "cached_gauss": float(cached_gauss),
        },
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss_next": gauss_next},
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gauss"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))
