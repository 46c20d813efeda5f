"""Checkpoint files: atomic, safe to load, and carrying every random state a run draws from."""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from visionlab.checkpoint_format import UNRECORDED, Checkpoint, Place, load_checkpoint
from visionlab.provenance import record
from visionlab.training.checkpoint import Checkpoints, save_checkpoint
from visionlab.training.state import restore_rng_states, rng_states


def test_random_states_round_trip_through_a_safe_load(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_states(), "model": {}, "config": {}})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng_states(torch.load(tmp_path / "c.pt", weights_only=True)["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_best_pt_keeps_the_best_epoch_while_last_pt_moves_on(tmp_path):
    checkpoints = Checkpoints(tmp_path, "val/acc", config={}, started=time.perf_counter())
    for epoch, acc in enumerate([0.5, 0.7, 0.6], start=1):
        checkpoints.save({"model": {"epoch": torch.tensor(epoch)}}, {"val/acc": acc})
    assert load_checkpoint(tmp_path / "last.pt").model["epoch"] == 3
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.model["epoch"] == 2 and best.best_value == 0.7


def test_loss_objectives_are_minimized(tmp_path):
    checkpoints = Checkpoints(tmp_path, "val/loss", config={}, started=time.perf_counter())
    for epoch, loss in enumerate([0.9, 0.4, 0.6], start=1):
        checkpoints.save({"model": {"epoch": torch.tensor(epoch)}}, {"val/loss": loss})
    assert load_checkpoint(tmp_path / "best.pt").model["epoch"] == 2


def test_checkpoints_carry_the_runs_provenance_through_a_safe_load(tmp_path):
    """torch's own version string is a TorchVersion, which a weights_only load refuses:
    the record holds plain values."""
    origin = record(torch.device("cpu"), None)
    checkpoints = Checkpoints(tmp_path, "val/acc", config={}, started=time.perf_counter(), provenance=origin)
    checkpoints.save({"model": {"w": torch.ones(1)}}, {"val/acc": 0.5})
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(tmp_path / name).provenance == origin


def test_a_checkpoint_file_holds_the_same_keys_it_always_has_and_reads_back_whole(tmp_path):
    """The typed Checkpoint writes the flat keys of docs/architecture.md ("Checkpoints"), so files written before it
    load, and the files it writes load in older code."""
    checkpoints = Checkpoints(
        tmp_path,
        "val/acc",
        config={"seed": 0},
        started=time.perf_counter(),
        place=Place(partition=1, partitions_done=({"epochs": 2},), folder="fold_1", test_checkpoint=None),
    )
    learned = {"model": {"w": torch.ones(2)}, "done": {"train": {"acc": 0.5}}, "position": {"epoch": 2, "step": 9}}
    checkpoints.inputs = {"shape": [1, 2, 2], "mean": [0.5], "std": [0.25], "classes": ["a", "b"]}
    checkpoints.save({**learned, "history": {1: {"val/acc": 0.5}}}, {"val/acc": 0.5})
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert set(raw) == {
        *("model", "done", "position", "history", "config", "provenance", "seconds", "best_value", "inputs"),
        *("partition", "partitions_done", "model_overrides", "folder", "test_checkpoint"),
    }
    assert raw["partition"] == 1 and raw["folder"] == "fold_1" and raw["partitions_done"] == [{"epochs": 2}]
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.place == Place(1, ({"epochs": 2},), {}, "fold_1", None)
    assert loaded.position == {"epoch": 2, "step": 9} and loaded.history == {1: {"val/acc": 0.5}}
    assert loaded.inputs == checkpoints.inputs and "inputs" not in loaded.training  # not part of a resume's state
    assert Checkpoint.from_dict(loaded.to_dict()) == loaded


def test_a_checkpoint_from_before_the_run_recorded_its_test_file_says_so(tmp_path):
    """Older files lack `test_checkpoint`: vl-eval then reads metrics.json instead (evaluation.py)."""
    old = {"model": {"w": torch.ones(1)}, "config": {}, "done": {}}
    save_checkpoint(tmp_path / "last.pt", old)
    loaded = load_checkpoint(tmp_path / "last.pt")
    assert loaded.place.test_checkpoint == UNRECORDED and loaded.position is None and loaded.training is None
