"""Checkpoints that survive a kill at any instant and can never run code when loaded.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the old
one: a reader sees the old checkpoint or the new one, never half of either. A write that finds
no space removes its temporary file and stops the run (errors.DiskFull: docs/architecture.md, "Exit codes"). Loading
uses `torch.load(weights_only=True)`, so the file may hold tensors and plain containers only (what
training/state.py's `TrainingState.state_dict()` gives). What a file holds is one `Checkpoint`, its
fields the contract docs/architecture.md ("Checkpoints") states.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionlab.console import full_log_file
from visionlab.errors import DiskFull, UserError, no_space
from visionlab.objective import better

UNRECORDED = "unrecorded"  # `test_checkpoint` of a file written before checkpoints said which file took the test


@dataclass(frozen=True)
class Place:
    """Where in its run a checkpoint's partition is (a holdout has one partition; k-fold has one per fold)."""

    partition: int = 0  # its index in the run's plan
    partitions_done: tuple[dict[str, Any], ...] = ()  # the finished partitions' results (experiment.stored)
    model_overrides: dict[str, Any] = field(default_factory=dict)  # what the folds chose for the final model
    folder: str = ""  # its folder in the run directory: "", fold_<i>, final
    test_checkpoint: str | None = None  # which of the folder's files takes the run's test; None: it takes none


@dataclass(frozen=True)
class Checkpoint:
    """One last.pt or best.pt: the learned model, the run's config and where the run was.

    `training` is `TrainingState.state_dict()` less the model and `done` (optimizer, schedule,
    position, random states, history): what a resume needs to carry on at the next step. A model
    that memorizes its train split (kNN) has none and cannot be resumed.
    """

    model: dict[str, Any]
    done: dict[str, dict[str, Any]]  # the last finished epoch's train and val metrics
    config: dict[str, Any]  # resolved, so vl-eval and resume need nothing but the file
    place: Place = field(default_factory=Place)
    training: dict[str, Any] | None = None
    provenance: dict[str, Any] | None = None  # where the run came from (provenance.py)
    seconds: float = 0.0  # training time so far, earlier sessions included
    best_value: float | None = None  # the objective's best value so far: best.pt's

    @property
    def position(self) -> dict[str, Any] | None:
        """epoch, step, batch: where training was; None for a model that memorizes."""
        return self.training["position"] if self.training else None

    @property
    def history(self) -> dict[int, dict[str, Any]]:
        """Each finished epoch's metrics; {} for a model that memorizes."""
        return {int(epoch): metrics for epoch, metrics in (self.training or {}).get("history", {}).items()}

    def learned(self) -> dict[str, Any]:
        """What `TrainingState.load_state_dict` takes back."""
        return {"model": self.model, "done": self.done, **(self.training or {})}

    def to_dict(self) -> dict[str, Any]:
        """The file's content: the same keys checkpoints have always had (flat, plain values and tensors)."""
        place = dataclasses.asdict(self.place)
        place["partitions_done"] = list(self.place.partitions_done)
        return {
            **self.learned(),
            **place,
            "config": self.config,
            "provenance": self.provenance,
            "seconds": self.seconds,
            "best_value": self.best_value,
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Checkpoint:
        """A checkpoint of this version or an earlier one (keys added since are given their old meaning)."""
        keys = {f.name for f in dataclasses.fields(cls)} | {f.name for f in dataclasses.fields(Place)}
        training = {key: value for key, value in state.items() if key not in keys}
        return cls(
            model=state["model"],
            done=state.get("done", {}),
            config=state["config"],
            place=Place(
                partition=state.get("partition", 0),
                partitions_done=tuple(state.get("partitions_done", ())),
                model_overrides=state.get("model_overrides", {}),
                folder=state.get("folder", ""),
                test_checkpoint=state.get("test_checkpoint", UNRECORDED),
            ),
            training=training if "position" in training else None,
            provenance=state.get("provenance"),
            seconds=state.get("seconds", 0.0),
            best_value=state.get("best_value"),
        )


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


def load_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give a run directory or a last.pt/best.pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding objects a safe load refuses
        raise UserError(f"checkpoint {path} is corrupt or not a visionlab checkpoint ({type(exc).__name__})") from exc
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not a visionlab checkpoint: it lacks the model or config")
    return Checkpoint.from_dict(state)
