"""Every place visionlab leans on another library's internals, each with what it saves.

`VL_NO_PATCHES=1` in the environment turns all of them off: the libraries then behave as
released, only slower. tests/test_patches.py fails if a library changes under a patch.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Iterator
from typing import NoReturn
from unittest import mock

import torch
from hydra._internal.hydra import Hydra
from hydra.types import RunMode

ENABLED = os.environ.get("VL_NO_PATCHES", "") in ("", "0")
_COMPOSE_FOR_MODE = Hydra.get_mode


@contextlib.contextmanager
def skip_hydra_mode_compose() -> Iterator[None]:
    """Hydra's `get_mode` composes the whole config once more just to read `hydra.mode`, at every start.

    conf/ never sets hydra.mode (tests/test_configs.py checks), so only a hydra.mode=... on the
    command line can; without one, -m or its absence decides, as in Hydra. Patched for the launch only,
    so that a notebook's process keeps Hydra as released.
    """
    if not ENABLED:
        yield
        return
    with mock.patch.object(Hydra, "get_mode", _mode_from_command_line):
        yield


def _mode_from_command_line(self: Hydra, config_name: str | None, overrides: list[str]) -> RunMode | None:
    if any(override.lstrip("+~").startswith("hydra.mode") for override in overrides):
        return _COMPOSE_FOR_MODE(self, config_name, overrides)
    return None


def exit_without_teardown(code: int | str | None, single_run: bool) -> NoReturn:
    """Exit as `sys.exit(code)` would, minus Python's teardown of every loaded module (long with torch loaded).

    The atexit handlers still run (logging's flush and close, the sweep report); the run's own
    files (checkpoints, metrics.json, TensorBoard events) are closed by then. Only a single run
    exits so: a sweep's launchers shut down pools and threads in the normal exit's order, and under a
    profiler, debugger or coverage tool the exit is the normal one, so that they can write results.
    """
    other_threads = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    if not ENABLED or not single_run or other_threads or sys.getprofile() or sys.gettrace():
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1 if isinstance(code, str) else code or 0)


@contextlib.contextmanager
def unchecked_trace() -> Iterator[None]:
    """TensorBoard's add_graph traces with `check_trace=True`, which runs the model twice more to compare outputs:
    0.75 s of a default MNIST run's start, against 0.01 s for the trace itself. A picture needs no check.
    """
    if not ENABLED:
        yield
        return
    with mock.patch.object(torch.jit, "trace", functools.partial(torch.jit.trace, check_trace=False)):
        yield


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX-512 BF16 or AMX): `trainer.precision=auto` asks.

    torch's only public answer is oneDNN's `_is_mkldnn_bf16_supported`, which also says yes for plain
    AVX-512, where bf16 is emulated and slower than float32 (docs/speed.md, "On a CPU: experiment=cifar10_fast").
    Off (VL_NO_PATCHES=1): no, so auto means float32.
    """
    return ENABLED and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def cpu_has_vnni() -> bool:
    """Whether this CPU has VNNI, the int8 dot-product instructions that make torch's int8 matrix product
    (`int8_matmul`) faster than a float32 one: kNN's search of 8-bit images asks (models/knn/).

    Without VNNI torch's CPU int8 product is a plain loop, far slower than a float32 matrix product
    (BENCHMARKS.md, "kNN"). torch answers only privately. Off (VL_NO_PATCHES=1): no, so the kNN search
    takes its float32 products, which give the same answers.
    """
    return ENABLED and torch.cpu._is_vnni_supported()


def int8_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b of int8 matrices `[m, d]` and `[d, n]`, exactly, as int32: torch's private `_int_mm` (cuBLAS's int8
    product on a GPU, VNNI on a CPU), its only int8 matrix product. Its shape rules are the caller's
    (models/knn/int8_codes.py). Off (VL_NO_PATCHES=1): float64 matrix products, as exact (each sum of
    int8 products is an integer far below 2^53) and slower.
    """
    if not ENABLED:
        return (a.double() @ b.double()).int()
    return torch._int_mm(a, b)
