"""What a checkpoint file holds, how it is read, and which file of a run directory is its model.

A foundation module, below `features/` and `training/`: `training/checkpoint.py` writes these files,
`vl-eval`, `vl-predict` and `resume=` read them, and `features=network` (features/network.py) reads
a trained network from one, all with the same rules (docs/architecture.md, "Checkpoints"). Loading
uses `torch.load(weights_only=True)`: a file holds tensors and plain containers only, and can never
run code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from visionlab.errors import UserError

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
    # what the model takes, as its run prepared its images: `shape` [C, H, W], the per-channel `mean` and `std` of
    # its train part (the normalization) and `classes`; None for a checkpoint written before they were recorded, or
    # a model trained on feature vectors
    inputs: dict[str, Any] | None = None

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
            "inputs": self.inputs,
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
            inputs=state.get("inputs"),
        )


def load_checkpoint(path: Path) -> Checkpoint:
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give a run directory or a last.pt/best.pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding objects a safe load refuses
        raise UserError(f"checkpoint {path} is corrupt or not a visionlab checkpoint ({type(exc).__name__})") from exc
    return _checked(path, state)


def read_checkpoint(path: Path) -> tuple[Checkpoint, str]:
    """load_checkpoint, and the SHA-256 of the very bytes it loaded: the content's identity, whatever the file's name
    or time (a network retrained into the same folder is another checkpoint)."""
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give a run directory or a last.pt/best.pt file")
    data = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or holding objects a safe load refuses
        raise UserError(f"checkpoint {path} is corrupt or not a visionlab checkpoint ({type(exc).__name__})") from exc
    return _checked(path, state), hashlib.sha256(data).hexdigest()


def _checked(path: Path, state: Any) -> Checkpoint:
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UserError(f"checkpoint {path} is not a visionlab checkpoint: it lacks the model or config")
    return Checkpoint.from_dict(state)


def run_checkpoint(path: Path, which: str | None = None) -> tuple[Path, Checkpoint, str]:
    """The file to load for `path` (a checkpoint file, or a run directory), its contents, and why that file (for
    the log; "" for a file given as it is).

    A run directory's last.pt names the file of its partition whose weights took the test (`test_checkpoint`: best.pt
    with `trainer.test_on=best`, else last.pt); `which` (last, best) picks one of that partition's files instead. A
    checkpoint written before they recorded it is read with metrics.json's `tested_epoch`, which exists when best.pt
    took the test. `vl-eval`, `vl-predict` and `features=network` all choose with this.
    """
    if not path.is_dir():
        if which is not None:
            raise UserError(
                f"--checkpoint {which} picks a file of a run directory, and {path} is a file: "
                f"give the run directory, or the file alone"
            )
        return path, load_checkpoint(path), ""
    state = load_checkpoint(path / "last.pt")
    folder = path / state.place.folder
    if not folder.is_dir():  # `path` is the partition's own folder (fold_<i>/, final/), not the run directory
        folder = path
    tested = state.place.test_checkpoint
    if tested == UNRECORDED:
        tested = legacy_test_checkpoint(path)
    name = f"{which}.pt" if which else tested or "last.pt"
    chosen = folder / name
    state = state if name == "last.pt" else load_checkpoint(chosen)
    return chosen, state, why_this_file(state, name, tested, which)


def legacy_test_checkpoint(run_dir: Path) -> str:
    metrics = run_dir / "metrics.json"
    return "best.pt" if metrics.is_file() and "tested_epoch" in json.loads(metrics.read_text()) else "last.pt"


def why_this_file(state: Checkpoint, name: str, tested: str | None, which: str | None) -> str:
    """What the loaded weights are: their epoch, whether they took the run's test, how to choose the other file."""
    epochs = state.history
    at = f"epoch {max(map(int, epochs))}, " if epochs else ""
    if tested is None:
        return f"{at}the run took no test: a fold of a k-fold run without split.final_test"
    other = "last" if name == "best.pt" else "best"
    if name == tested:
        return f"{at}the weights that took the run's test; --checkpoint {other} for the {other} epoch's"
    return f"{at}chosen with --checkpoint {which}; the run's test was taken on {tested}"
