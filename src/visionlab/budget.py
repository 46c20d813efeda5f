"""Memory checked before work (docs/architecture.md, "Memory check").

What a run will take is estimated from the dataset's plan (data/base.py: counts and image shape,
known before any file is decoded) and a shape-only copy of the model built on torch's meta device
(parameters, FLOPs and every layer's output, for no memory and a few milliseconds; `measurable`), then weighed
against what the machine, or the GPU, has free. Over it: one line and exit 2, before anything is
decoded or built, naming the figure and the settings that bring it down. Near it: a warning line.
The estimate errs high (float32, Adam's two moments, every layer's output kept for the backward
pass), since a run killed by the kernel says nothing and keeps nothing.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from visionlab.data.base import Plan
from visionlab.data.images import training_size
from visionlab.errors import UserError
from visionlab.features import Features
from visionlab.reporting.layer_summary import human, layer_table
from visionlab.training.settings import TrainerSettings

log = logging.getLogger("visionlab")

LIMIT = "VL_MEMORY_LIMIT"  # bytes the check counts as free instead of what the machine says ("8G", "500M")
NEAR = 0.8  # a need above this share of what is free: a warning
FLOAT = 4
# Per weight while training: itself, its gradient, Adam's two moments (the most of conf/optimizer/), and a checkpoint's
# weight and moments read back (test_on=best, resume)
TRAINED_COPIES = 7
PICTURED = 72  # images a picture of the run holds at most (the kNN's: 8 test images and 8 neighbours each; reporting/)
PICTURE_COPIES = 3  # float32 copies of them while a picture is drawn
UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
EMPTIED_ON_THE_CPU = 2**24  # parameters up to which the layer table of the shape-only copy runs on the CPU (measurable)
SMALL_SIDE = 64  # the longer side of the size suggested when images are large (conf/dataset/folder.yaml's max_side)


@dataclass
class Part:
    """One thing that takes memory: what it is (for the message), its bytes, whether it lives on the training
    device (else in the machine's memory) and the settings that shrink it."""

    what: str
    bytes: int
    on_device: bool
    levers: tuple[str, ...]


@dataclass
class Need:
    parts: list[Part]
    model: str  # "CNN, 393,610 parameters, 52.1 MFLOPs per image"


def estimate(
    plan: Plan, model: Callable[..., torch.nn.Module], features: Features, trainer: TrainerSettings, training: bool
) -> Need:
    """What the run (training) or an evaluation of its checkpoint (not training) will hold at its peak."""
    shape = plan.shape
    images = plan.train + plan.test
    resize = _smaller(plan)
    pixels = (resize,) if resize else ("dataset.train_size", "dataset.test_size")
    pictured = min(images, PICTURED)
    parts = [
        Part(
            f"the images ({images:,} x {_shape(shape)} bytes)", images * math.prod(shape) + plan.reading, False, pixels
        ),
        Part(f"the images on the device ({images:,} x {_shape(shape)} bytes)", images * math.prod(shape), True, pixels),
        Part(
            f"the pictures ({pictured} images in float32)",
            pictured * math.prod(shape) * FLOAT * PICTURE_COPIES,
            False,
            ("logging.* (conf/logging/)",),
        ),
    ]
    in_shape = shape
    if features.extractors:
        size = features.planned_size(shape)
        in_shape = (size,)
        parts.append(
            Part(f"the features ({images:,} x {size:,} float32)", images * size * FLOAT, True, ("features.*", *pixels))
        )
    with torch.device("meta"):  # shapes only: a model of a billion weights costs nothing here
        built = model(in_shape=in_shape, num_classes=plan.classes)
    try:
        table = layer_table(measurable(built), in_shape)
    except RuntimeError:  # a tensor it keeps outside its parameters and buffers is still on meta: measured there
        with torch.device("meta"):
            built = model(in_shape=in_shape, num_classes=plan.classes)
        table = layer_table(built, in_shape)
    name = type(built).__name__
    if not table.params:  # nothing to train: it memorizes the training split and searches it (models/knn/)
        width = math.prod(in_shape)
        chunk = min(getattr(built, "chunk_size", plan.test), max(plan.train, plan.test))
        parts.append(
            Part(
                f"{name}'s memorized training images ({plan.train:,} x {width:,} float32)",
                plan.train * width * FLOAT,
                True,
                pixels,
            )
        )
        parts.append(
            Part(
                f"its search ({chunk:,} queries x {plan.train:,} distances)",
                chunk * (plan.train + 8 * width) * FLOAT,
                True,
                ("model.chunk_size",),
            )
        )
        return Need(parts, f"{name}, no parameters")
    copies = TRAINED_COPIES if training else 1
    kept = "with their gradients, Adam's moments and a checkpoint read back" if training else "as float32"
    parts.append(
        Part(
            f"{name}'s {table.params:,} parameters {kept}",
            table.params * FLOAT * copies,
            True,
            (*pixels[:1], "model.* (conf/model/)"),
        )
    )
    outputs = [math.prod(layer.shape) for layer in table.layers if layer.shape]
    batch = min(plan.train if trainer.batch_size == "all" else trainer.batch_size, plan.train)
    evaluated = min(trainer.eval_batch_size, max(plan.train, plan.test))
    # the batch and every layer's output kept for the backward pass, and the gradients of the two largest in flight
    widest = 2 * max(max(outputs, default=0), math.prod(in_shape))
    step = batch * (sum(outputs) + math.prod(in_shape) + widest) * FLOAT if training else 0
    scoring = evaluated * (2 * max(outputs, default=0) + math.prod(in_shape)) * FLOAT
    if step >= scoring:
        parts.append(Part(f"a training step of {batch:,} images", step, True, ("trainer.batch_size", *pixels[:1])))
    else:
        parts.append(
            Part(f"an evaluation pass of {evaluated:,} images", scoring, True, ("trainer.eval_batch_size", *pixels[:1]))
        )
    return Need(parts, f"{name}, {table.params:,} parameters, {human(table.flops)}FLOPs per image")


def measurable(built: torch.nn.Module) -> torch.nn.Module:
    """The shape-only copy, given empty CPU weights where it has at most EMPTIED_ON_THE_CPU parameters, for the
    layer table's one image: on the meta device that image goes through torch's Python reference ops, which import
    sympy, about a second of CPU at every run's start, where empty weights on the CPU give the same shapes and
    FLOPs in milliseconds. Their values are never read for anything but shapes; a larger model stays on meta. Not
    nn.Module.to_empty: its empty_like of a meta tensor is one of those reference ops."""
    count = sum(parameter.numel() for parameter in built.parameters())
    if not count or count > EMPTIED_ON_THE_CPU:
        return built
    emptied: dict[int, torch.Tensor] = {}  # by the meta tensor's id: a weight two layers share stays one

    def empty(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in emptied:
            copy = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu")
            is_parameter = isinstance(tensor, torch.nn.Parameter)
            emptied[id(tensor)] = torch.nn.Parameter(copy, tensor.requires_grad) if is_parameter else copy
        return emptied[id(tensor)]

    for module in built.modules():
        for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
            setattr(module, name, empty(tensor))
    return built


def check(need: Need, device: torch.device) -> None:
    """Refuse (UserError) a need over what is free, warn near it; say the estimate either way."""
    gpu = device.type == "cuda"  # else the device's memory is the machine's
    pools = [(True, f"memory on {device}", gpu_free(device))] if gpu else []
    pools.append((False, "memory", host_free()))
    said = []
    for on_device, where, (free, source) in pools:
        parts = sorted((p for p in need.parts if not gpu or p.on_device == on_device), key=lambda p: -p.bytes)
        total = sum(p.bytes for p in parts)
        of = f" of the {_bytes(free)} of {where} free ({source})" if free is not None else f" of {where}"
        said.append(f"{_bytes(total)}{of}")
        if free is None or total <= NEAR * free:
            continue
        what = ", ".join(f"{p.what} {_bytes(p.bytes)}" for p in parts if p.bytes >= total / 100)
        levers = ", ".join(dict.fromkeys(lever for p in parts if p.bytes >= total / 10 for lever in p.levers))
        figure = (
            f"this run needs about {_bytes(total)} of {where} and {_bytes(free)} is free ({source}): {what} "
            f"({need.model})"
        )
        if total > free:
            other = f"{LIMIT} says so" if source == LIMIT else f"set {LIMIT} if more is free than {source} says"
            raise UserError(f"{figure}; bring it down with {levers} ({other})")
        log.warning("memory: %s; it may swap or be killed (%s bring it down)", figure, levers)
    log.info("memory: this run needs about %s; %s", " and ".join(said), need.model)


def host_free() -> tuple[int | None, str]:
    """Bytes this process may still take: LIMIT, else the kernel's MemAvailable, less where a cgroup allows less."""
    if LIMIT in os.environ:
        return parse_bytes(os.environ[LIMIT]), LIMIT
    free, source = None, "nothing says"
    try:
        free = int(re.search(r"^MemAvailable:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M).group(1)) * 1024
        source = "MemAvailable"
    except (OSError, AttributeError):
        pass
    try:
        group = Path("/sys/fs/cgroup")
        allowed = (group / "memory.max").read_text().strip()
        if allowed != "max":
            left = int(allowed) - int((group / "memory.current").read_text())
            if free is None or left < free:
                free, source = left, "the cgroup's memory.max"
    except (OSError, ValueError):
        pass
    return free, source


def gpu_free(device: torch.device) -> tuple[int, str]:
    if LIMIT in os.environ:
        return parse_bytes(os.environ[LIMIT]), LIMIT
    return torch.cuda.mem_get_info(device)[0], "torch.cuda.mem_get_info"


def parse_bytes(text: str) -> int:
    """ "8G", "500 MB", "2.5GiB", "1000000" -> bytes (binary units)."""
    found = re.fullmatch(r"\s*([0-9.]+)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not found:
        raise UserError(f"{LIMIT}={text!r} is invalid: use a number of bytes, such as 8G or 500M")
    return int(float(found.group(1)) * UNITS[found.group(2).upper()])


def _smaller(plan: Plan) -> str | None:
    """The setting, with a value, that makes the images smaller: dataset.size=[48,64]."""
    if plan.size_key is None:
        return None
    c, h, w = plan.shape
    small = training_size((h, w), SMALL_SIDE) if max(h, w) > SMALL_SIDE else (max(1, h // 2), max(1, w // 2))
    return f"{plan.size_key}=[{','.join(map(str, ((c,) if plan.size_key == 'dataset.shape' else ()) + small))}]"


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def _bytes(count: int) -> str:
    return f"{count / 2**30:.1f} GB" if count >= 2**30 else f"{count / 2**20:.0f} MB"
