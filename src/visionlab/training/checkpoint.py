"""Checkpoints that survive a kill at any instant and can never run code when loaded.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the old
one: a reader sees the old checkpoint or the new one, never half of either. A write that finds
no space removes its temporary file and stops the run (errors.DiskFull: docs/architecture.md, "Exit codes"). Loading
uses `torch.load(weights_only=True)`, so the file may hold tensors and plain containers only (what
training/state.py's `TrainingState.state_dict()` gives). What a file holds is one `Checkpoint`, its
fields the contract docs/architecture.md ("Checkpoints") states (checkpoint_format.py: the class, and reading one).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from visionlab.checkpoint_format import Checkpoint, Place
from visionlab.console import full_log_file
from visionlab.errors import DiskFull, UserError, no_space
from visionlab.objective import better


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)  # to a Python file, so a failed write's OSError comes with it (errors.no_space)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        folder = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # make the rename itself durable
        finally:
            os.close(folder)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if no_space(exc):
            raise DiskFull(path.parent, f"{path.name} (about {tensor_bytes(state) / 1e6:.1f} MB)") from exc
        if isinstance(exc, OSError):
            kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint was written"
            raise UserError(f"could not write {path} ({exc.strerror or exc}); {kept}") from exc
        raise


def tensor_bytes(value: Any) -> int:
    """What a checkpoint of `value` needs, roughly: its tensors' bytes (the pickle around them is small)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


class Checkpoints:
    """`last.pt` after every epoch (and every N steps), `best.pt` whenever the objective improves.

    best.pt is a hard link to the last.pt just written, so marking the best costs no second write;
    the next last.pt replaces the directory entry, not the file best.pt points to. In a k-fold run
    each partition keeps its own in its folder, and `run_last` (the run directory's last.pt) links
    to the newest of them, so `resume=RUN_DIR` finds where the run was, whichever fold it was in.
    """

    def __init__(
        self,
        folder: Path,
        objective: str,
        config: dict[str, Any],
        started: float,
        best: float | None = None,
        run_last: Path | None = None,
        provenance: dict[str, Any] | None = None,
        place: Place | None = None,
    ):
        self.last = folder / "last.pt"
        self.best = folder / "best.pt"
        self.run_last = run_last if run_last not in (None, self.last) else None
        self.objective = objective
        self.config = config
        self.provenance = provenance
        self.started = started  # time.perf_counter() at the run's start, earlier sessions included
        self.best_value = best
        self.place = place or Place()  # where in the run this partition is
        self.inputs: dict[str, Any] | None = None  # what the model takes (Checkpoint.inputs), once its data are ready

    def save(self, learned: dict[str, Any], metrics: dict[str, float | None] | None = None) -> None:
        """Write last.pt from `learned` (a TrainingState's state_dict, or a memorizing model's `model` and `done`);
        with end-of-epoch `metrics`, also best.pt if the objective improved."""
        value = (metrics or {}).get(self.objective)
        improved = value is not None and (self.best_value is None or better(value, self.best_value, self.objective))
        if improved:
            self.best_value = value
        training = {key: value for key, value in learned.items() if key not in ("model", "done")}
        checkpoint = Checkpoint(
            model=learned["model"],
            done=learned.get("done", {}),
            config=self.config,
            place=self.place,
            training=training or None,
            provenance=self.provenance,
            seconds=time.perf_counter() - self.started,
            best_value=self.best_value,
            inputs=self.inputs,
        )
        self.last.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.last, checkpoint.to_dict())
        if improved:
            link_over(self.last, self.best)
        if self.run_last is not None:
            link_over(self.last, self.run_last)
        if (log_file := full_log_file()) is not None:  # a full disk silenced the log: stop while last.pt is whole
            raise DiskFull(log_file.parent, log_file.name)


def link_over(source: Path, target: Path) -> None:
    """`target` becomes another name for `source`, atomically (a copy where there are no hard links)."""
    link = target.with_name(f".{target.name}.tmp")
    link.unlink(missing_ok=True)
    try:
        try:
            os.link(source, link)
        except OSError:
            shutil.copyfile(source, link)
        os.replace(link, target)
    except BaseException as exc:
        link.unlink(missing_ok=True)
        if no_space(exc):
            raise DiskFull(target.parent, f"a copy of {source.name} as {target.name}") from exc
        raise
