"""Checkpoints that survive a kill at any instant and can never run code when loaded.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the old
one: a reader sees the old checkpoint or the new one, never half of either. Loading uses
`torch.load(weights_only=True)`, so the file may hold tensors and plain containers only; the
random-number states are stored in that form for the same reason.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionlab.errors import UserError


@dataclass
class Position:
    """Where training is, down to the batch: enough to carry on with the very next step."""

    epoch: int = 1  # the epoch in progress, or the next to start
    step: int = 0  # optimizer steps taken so far
    batch: int = 0  # batches of `epoch` done; 0: it has not started
    order: torch.Tensor | None = None  # the epoch's permutation of the train split, once started
    sums: list[torch.Tensor] | None = None  # the epoch's running data loss, reg loss and correct count


def training_state(model, optimizer, scheduler, precision, order_rng: torch.Generator, at: Position,
                   done: dict[str, dict], val_history: dict[int, float]) -> dict[str, Any]:
    """Everything fit() needs to go on as if it had never stopped, as tensors and plain values."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.state_dict(),  # fp16's loss scale; empty otherwise
        "position": {
            "epoch": at.epoch, "step": at.step, "batch": at.batch,
            "order": None if at.batch == 0 else at.order.cpu(),
            "sums": None if at.batch == 0 else [s.cpu() for s in at.sums],
        },
        "rng": {**rng_states(), "order": order_rng.get_state()},
        "done": {split: {k: v for k, v in metrics.items() if k != "confusion"} for split, metrics in done.items()},
        "val_history": dict(val_history),
    }


def restore_training_state(state: dict[str, Any], model, optimizer, scheduler, precision, order_rng: torch.Generator,
                           device: torch.device) -> tuple[Position, dict[str, dict]]:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    precision.load_state_dict(state["scaler"])
    order_rng.set_state(state["rng"]["order"])
    restore_rng_states(state["rng"])
    p = state["position"]
    at = Position(p["epoch"], p["step"], p["batch"])
    if at.batch:
        at.order = p["order"].to(device)
        at.sums = [s.to(device) for s in p["sums"]]
    return at, state["done"]


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # make the rename itself durable
        finally:
            os.close(folder)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
        raise UserError(f"could not write {path} ({exc.strerror or exc}); {kept}") from exc


class Checkpoints:
    """`last.pt` after every epoch (and every N steps), `best.pt` whenever the objective improves.

    best.pt is a hard link to the last.pt just written, so marking the best costs no second write;
    the next last.pt replaces the directory entry, not the file best.pt points to.
    """

    def __init__(self, run_dir: Path, objective: str, config: dict[str, Any], started: float, best: float | None = None):
        self.last = run_dir / "last.pt"
        self.best = run_dir / "best.pt"
        self.objective = objective
        self.config = config  # resolved, so vl-eval and resume need nothing but the file
        self.started = started  # time.perf_counter() at the run's start, earlier sessions included
        self.best_value = best
        self.maximize = objective.endswith("acc")

    def save(self, state: dict[str, Any], metrics: dict[str, float | None] | None = None) -> None:
        """Write last.pt; with end-of-epoch `metrics`, also best.pt if the objective improved."""
        value = (metrics or {}).get(self.objective)
        improved = value is not None and (
            self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value)
        )
        if improved:
            self.best_value = value
        seconds = time.perf_counter() - self.started
        save_checkpoint(self.last, {**state, "config": self.config, "seconds": seconds, "best_value": self.best_value})
        if improved:
            link = self.best.with_name(f".{self.best.name}.tmp")
            link.unlink(missing_ok=True)
            try:
                os.link(self.last, link)
            except OSError:  # a filesystem without hard links
                shutil.copyfile(self.last, link)
            os.replace(link, self.best)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give a run directory or a last.pt/best.pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding objects a safe load refuses
        raise UserError(f"checkpoint {path} is corrupt or not a visionlab checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not a visionlab checkpoint: it lacks the model or config")
    return state


def rng_states() -> dict[str, Any]:
    """Every global random state a run draws from, as tensors and plain values."""
    _, keys, position, has_gauss, cached_gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(position),
                  "has_gauss": int(has_gauss), "cached_gauss": float(cached_gauss)},
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
