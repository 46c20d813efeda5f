"""The patches of other libraries' internals (src/visionlab/patches.py): each still fits the library,
and the switch turns them off."""

from __future__ import annotations

import atexit
import inspect
import os
import subprocess
import sys
from unittest import mock

import torch
from hydra._internal.hydra import Hydra
from torch.utils.tensorboard import _pytorch_graph

from tests.conftest import TINY, VL_TRAIN, cpu_has_native_bfloat16, read_metrics
from visionlab import patches


def test_hydra_get_mode_still_has_the_signature_the_replacement_takes():
    assert list(inspect.signature(Hydra.get_mode).parameters) == ["self", "config_name", "overrides"]
    assert list(inspect.signature(patches._mode_from_command_line).parameters) == ["self", "config_name", "overrides"]


def test_atexit_still_has_the_private_runner_a_single_run_exits_through():
    assert callable(atexit._run_exitfuncs) and callable(os._exit)


def test_tensorboard_still_traces_through_torch_jit_trace_with_its_check(tmp_path):
    source = inspect.getsource(_pytorch_graph.graph)
    assert "torch.jit.trace(" in source, (
        "add_graph no longer calls torch.jit.trace: patches.unchecked_trace patches nothing"
    )
    calls = []
    real = torch.jit.trace

    def spy(*args, **kwargs):
        calls.append(kwargs.get("check_trace", True))
        return real(*args, **kwargs)

    with mock.patch.object(torch.jit, "trace", spy), patches.unchecked_trace():
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(tmp_path)) as writer:
            writer.add_graph(torch.nn.Linear(3, 2), torch.zeros(1, 3))
    assert calls == [False], "the graph was traced once, without the self-check"


def test_torch_still_answers_whether_the_cpu_computes_bfloat16_as_the_kernel_does():
    assert patches.cpu_computes_bfloat16() == cpu_has_native_bfloat16()


def test_with_the_switch_off_a_run_behaves_the_same_through_the_libraries_own_paths(tmp_path):
    env = {**os.environ, "VL_NO_PATCHES": "1"}
    code = "from visionlab import patches; print(patches.ENABLED)"
    assert (
        subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "False"
    )
    run_dir = tmp_path / "run"
    args = [*TINY, "trainer.epochs=1", "model=linear", f"hydra.run.dir={run_dir}"]
    result = subprocess.run([str(VL_TRAIN), *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir)["status"] == "completed"
    assert (run_dir / "summary.md").is_file()


def test_torch_still_has_the_private_vnni_check_and_it_answers_a_bool():
    assert isinstance(torch.cpu._is_vnni_supported(), bool)
    assert patches.cpu_has_vnni() is (patches.ENABLED and torch.cpu._is_vnni_supported())


def test_torch_int8_matmul_still_gives_exact_int32_products_and_the_switch_gives_the_same(monkeypatch):
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-128, 128, (17, 40), dtype=torch.int8, generator=generator)
    b = torch.randint(-128, 128, (40, 24), dtype=torch.int8, generator=generator)
    a[0], b[:, 0] = -128, -128  # the largest products, 2^14 each
    expected = a.long() @ b.long()
    assert callable(torch._int_mm)
    products = patches.int8_matmul(a, b)
    assert products.dtype == torch.int32 and torch.equal(products.long(), expected)
    monkeypatch.setattr(patches, "ENABLED", False)
    off = patches.int8_matmul(a, b)
    assert off.dtype == torch.int32 and torch.equal(off.long(), expected)
    assert patches.cpu_has_vnni() is False
