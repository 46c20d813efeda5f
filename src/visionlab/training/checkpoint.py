"""Checkpoints that survive a kill at any instant and can never run code when loaded.

A write goes to a temporary file in the same folder, is fsynced, then renamed over the old
one: a reader sees the old checkpoint or the new one, never half of either. Loading uses
`torch.load(weights_only=True)`, so the file may hold tensors and plain containers only; the
random-number states are stored in that form for the same reason.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionlab.errors import UserError


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
