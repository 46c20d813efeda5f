"""Settings that make training faster without changing what it computes: cuDNN autotuning, the C library's
allocator, the channels-last memory layout and torch.compile (`trainer.channels_last`, `trainer.compile`).
"""

from __future__ import annotations

import ctypes
import logging
import os

import torch
from torch import nn

log = logging.getLogger("visionlab")

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt() parameters (malloc.h)
HEAP_UP_TO = 32 << 20  # bytes: the largest M_MMAP_THRESHOLD glibc accepts on 64-bit systems
KEEP_FREED = 1 << 30  # bytes of freed memory the heap may keep rather than hand back to the OS


def configure_torch(device: torch.device) -> None:
    """The allocator; on CUDA, the run's GPU is the current one (so nothing lands on cuda:0 by default) and cuDNN
    picks the fastest convolution per shape. torch's CPU threads are the run's share of the cores
    (training/threads.py)."""
    keep_freed_memory()
    if device.type == "cuda":
        if device.index is not None:
            torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True


def keep_freed_memory() -> bool:
    """Lets glibc keep freed tensors' memory for the next step instead of handing it back to the OS.

    Each training step frees its activations and allocates them again (6 MiB each in the default
    MNIST CNN's first stage). With glibc's defaults buffers that large are mapped afresh (unless an
    earlier free happened to raise its threshold) and the heap is trimmed whenever its top is free,
    so a step faults its pages back in, each zero-filled by the kernel: about 9,000 page faults,
    a large share of the step's time. After this call buffers up to 32 MiB come from the
    heap, which keeps up to 1 GiB free: faster steps (bench/allocator.py measures them), the same peak
    memory. torch's own CPU launcher (torch.backends.xeon.run_cpu) preloads tcmalloc or jemalloc
    for the same reason. Returns False, changing nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or not a GNU libc
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, HEAP_UP_TO)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED))


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
