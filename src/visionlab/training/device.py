"""Pick the device: CUDA, then MPS, then the CPU; a device asked for by name must exist.

Under SLURM a job sees only the GPUs it was allocated (SLURM sets CUDA_VISIBLE_DEVICES), so
`cuda` is the job's own GPU there and nothing here overrides that variable. On one machine with
several GPUs, the jobs of a multirun (hydra/launcher=joblib) would all share cuda:0: each takes
GPU job number mod the GPU count instead.
"""

from __future__ import annotations

import re

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from visionlab.errors import UserError

ACCEPTED = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(name: str) -> torch.device:
    name = str(name)
    if name == "auto":
        if torch.cuda.is_available():
            return sweep_job_gpu()
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
        if name == "cuda":
            return sweep_job_gpu()
    if name == "mps" and not torch.backends.mps.is_available():
        raise UserError("trainer.device=mps but MPS is not available here: use trainer.device=cpu or auto")
    return torch.device(name)


def sweep_job_gpu() -> torch.device:
    """`cuda`, or in a multirun on several GPUs `cuda:N` for job number N mod their count."""
    count = torch.cuda.device_count()
    if count < 2 or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return torch.device("cuda")
    return torch.device("cuda", HydraConfig.get().job.num % count)
