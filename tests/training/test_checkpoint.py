"""Checkpoint files: atomic, safe to load, and carrying every random state a run draws from."""

from __future__ import annotations

import random
import time

import numpy as np
import torch

from visionlab.provenance import record
from visionlab.training.checkpoint import Checkpoints, load_checkpoint, save_checkpoint
from visionlab.training.state import restore_rng_states, rng_states


def test_random_states_round_trip_through_a_safe_load(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    save_checkpoint(tmp_path / "c.pt", {"rng": rng_states(), "model": {}, "config": {}})
    expected = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    restore_rng_states(load_checkpoint(tmp_path / "c.pt")["rng"])
    again = (torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)])
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def test_best_pt_keeps_the_best_epoch_while_last_pt_moves_on(tmp_path):
    checkpoints = Checkpoints(tmp_path, "val/acc", config={}, started=time.perf_counter())
    for epoch, acc in enumerate([0.5, 0.7, 0.6], start=1):
        checkpoints.save({"model": {"epoch": torch.tensor(epoch)}}, {"val/acc": acc})
    assert load_checkpoint(tmp_path / "last.pt")["model"]["epoch"] == 3
    best = load_checkpoint(tmp_path / "best.pt")
    assert best["model"]["epoch"] == 2 and best["best_value"] == 0.7


def test_loss_objectives_are_minimized(tmp_path):
    checkpoints = Checkpoints(tmp_path, "val/loss", config={}, started=time.perf_counter())
    for epoch, loss in enumerate([0.9, 0.4, 0.6], start=1):
        checkpoints.save({"model": {"epoch": torch.tensor(epoch)}}, {"val/loss": loss})
    assert load_checkpoint(tmp_path / "best.pt")["model"]["epoch"] == 2


def test_checkpoints_carry_the_runs_provenance_through_a_safe_load(tmp_path):
    """torch's own version string is a TorchVersion, which a weights_only load refuses:
    the record holds plain values."""
    origin = record(torch.device("cpu"), None)
    checkpoints = Checkpoints(tmp_path, "val/acc", config={}, started=time.perf_counter(), provenance=origin)
    checkpoints.save({"model": {"w": torch.ones(1)}}, {"val/acc": 0.5})
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(tmp_path / name)["provenance"] == origin
