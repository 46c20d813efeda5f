"""Pick the device: CUDA, then MPS, then the CPU; a device asked for by name must exist."""

from __future__ import annotations

import re

import torch

from visionlab.errors import UserError

ACCEPTED = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", name):
        raise UserError(f"trainer.device={name!r} is unknown: use {ACCEPTED}")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError(f"trainer.device={name} but no CUDA GPU is available here: use trainer.device=cpu or auto")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise UserError(f"trainer.device={name} but only {torch.cuda.device_count()} CUDA device(s) exist")
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device=mps but MPS is not available here: use trainer.device=cpu or auto")
    return torch.device(name)
