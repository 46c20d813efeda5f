"""Settings that make training faster without changing what it computes: threads, cuDNN autotuning,
the channels-last memory layout and torch.compile (`trainer.threads`, `trainer.channels_last`,
`trainer.compile`).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger("visionlab")


def available_cores() -> int:
    """The CPU cores this process may run on (a job scheduler's or taskset's limit included)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_torch(device: torch.device, threads: int | None) -> None:
    """torch's CPU threads (default: the cores available); on CUDA, cuDNN picks the fastest convolution per shape."""
    torch.set_num_threads(threads or available_cores())
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def prepare_model(model: nn.Module, *, channels_last: bool, compile: bool) -> None:
    """In place, so checkpoints, pictures and evaluation see the same module and state_dict keys.

    channels_last stores conv weights as NHWC, which the CPU (oneDNN) and tensor-core GPUs prefer;
    convolutions then produce NHWC activations from NCHW input by themselves. `nn.Module.compile`
    compiles the module's own forward instead of wrapping it, so `state_dict()` keeps its keys.
    """
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if compile:
        log.info("torch.compile: the first steps and the first evaluation compile the model (seconds to minutes)")
        model.compile()
