"""The fast paths: trainer.precision, trainer.channels_last, trainer.compile, trainer.threads, and the allocator.

They may change speed, never what a checkpoint holds or how a resumed run ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tests.cli.test_resume import LONG_EPOCHS
from tests.conftest import (
    TINY,
    cpu_has_native_bfloat16,
    read_metrics,
    run_cli,
    run_tool,
    start_vl_train,
    wait_for_position,
    without_timing,
)
from visionlab import patches
from visionlab.models.cnn import CNN
from visionlab.training.precision import Precision
from visionlab.training.speed import prepare_model

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "precision,dtype", [("32", torch.float32), (32, torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]
)
def test_precision_sets_the_forward_pass_dtype(precision, dtype):
    layer = torch.nn.Linear(8, 3)
    mixed = Precision(precision, CPU)
    with mixed.autocast():
        scores = layer(torch.randn(4, 8))
        loss = F.cross_entropy(scores, torch.tensor([0, 1, 2, 0]))
    assert scores.dtype == dtype
    assert loss.dtype == torch.float32, "the loss is reduced in float32 under every precision"
    assert layer.weight.dtype == torch.float32, "weights stay float32"
    assert mixed.scaler.is_enabled() == (precision == "fp16")


def test_auto_precision_is_bf16_exactly_where_the_cpu_computes_it_and_32_with_the_patches_off(monkeypatch):
    native = cpu_has_native_bfloat16()
    auto = Precision("auto", CPU)
    assert (auto.name, auto.dtype) == (("bf16", torch.bfloat16) if native else ("32", None))
    with auto.autocast():
        assert torch.nn.Linear(8, 3)(torch.randn(4, 8)).dtype == (torch.bfloat16 if native else torch.float32)
    assert not auto.scaler.is_enabled(), "auto never picks fp16, so it never needs a scaler"
    monkeypatch.setattr(patches, "ENABLED", False)
    assert Precision("auto", CPU).name == "32"


def test_fp16_skips_a_step_whose_gradients_overflow_and_backs_off():
    torch.manual_seed(0)
    model = CNN((1, 28, 28), 10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    mixed = Precision("fp16", CPU)
    images, labels = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))

    def step(loss_factor: float) -> torch.Tensor:
        before = model.classifier[-1].weight.detach().clone()
        with mixed.autocast():
            loss = F.cross_entropy(model(images), labels) * loss_factor
        optimizer.zero_grad()
        mixed.backward(loss)
        mixed.step(optimizer)
        return before

    before = step(1e6)  # x 65536: float16 gradients overflow
    assert torch.equal(model.classifier[-1].weight, before), "the overflowing step is skipped"
    assert mixed.state_dict()["scale"] == 32768.0
    before = step(1.0)
    assert not torch.equal(model.classifier[-1].weight, before), "a finite step is taken"
    restored = Precision("fp16", CPU)
    restored.load_state_dict(mixed.state_dict())
    assert restored.state_dict() == mixed.state_dict() and restored.state_dict()["_growth_tracker"] == 1
    assert Precision("32", CPU).state_dict() == {}


def test_compile_and_channels_last_keep_the_module_and_its_state_dict_keys():
    model = CNN((3, 32, 32), 10)
    keys = list(model.state_dict())
    reference = CNN((3, 32, 32), 10)
    reference.load_state_dict(model.state_dict())
    prepare_model(model, channels_last=True, compile=True)
    assert type(model) is CNN and list(model.state_dict()) == keys, "no torch.compile wrapper, no _orig_mod. prefix"
    conv = model.features[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    reference.load_state_dict(model.state_dict())  # a checkpoint of it loads into a plain model
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), model.state_dict().values()))


def test_channels_last_computes_the_same_scores():
    torch.manual_seed(0)
    model = CNN((3, 32, 32), 10).eval()
    images = torch.randn(8, 3, 32, 32)
    before = model(images)
    prepare_model(model, channels_last=True, compile=False)
    assert torch.allclose(model(images), before, atol=1e-5)


PAGE_FAULTS_PER_STEP = """
import resource, sys, torch
from visionlab import patches
from visionlab.models.cnn import CNN
from visionlab.training.speed import keep_freed_memory
kept = sys.argv[1] == "kept" and keep_freed_memory()
torch.manual_seed(0)
model = CNN((1, 28, 28), 10).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters())
images, labels = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))
def step():
    optimizer.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
for _ in range(3):
    step()
per_step = []
for _ in range(5):  # the quietest of 5 rounds: the kernel's own reclaim adds faults now and then, more under load
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        step()
    per_step.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 4)
print(kept, min(per_step))
"""


@pytest.mark.skipif(not hasattr(os, "confstr") or "CS_GNU_LIBC_VERSION" not in os.confstr_names, reason="glibc only")
def test_freed_activations_stay_in_the_heap_instead_of_faulting_back_in_every_step():
    """Counted, not timed: a page fault per 4 KiB of every activation was half of a default step's time
    (BENCHMARKS.md)."""
    faults = {}
    for mode in ("default", "kept"):
        done = subprocess.run(
            [sys.executable, "-c", PAGE_FAULTS_PER_STEP, mode], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        kept, faults[mode] = done.stdout.split()
        assert kept == str(mode == "kept")
    assert float(faults["default"]) > 1000, "glibc's defaults hand a step's buffers back and fault them in again"
    assert float(faults["kept"]) < float(faults["default"]) / 10, faults


def test_a_command_loads_neither_torchvision_nor_a_plotting_library_nor_dynamo():
    """Each costs start-up time and memory (BENCHMARKS.md, "Speed"): torchvision only downloads,
    pictures are drawn with Pillow, and torch._dynamo (over a second) waits for what needs it (torch's
    optimizers, torch.compile), which vl-eval, vl-predict and kNN never do."""
    code = (
        "import sys, torch, visionlab.cli, visionlab.experiment\n"
        "from visionlab.reporting import visuals\n"
        "visuals.picture(torch.rand(4, 1, 8, 8), 2, title='t', row_labels=['a', 'b'], captions=['c'] * 4)\n"
        "visuals.confusion_picture(torch.eye(3, dtype=torch.long), ['a', 'b', 'c'], 't')\n"
        "print(sorted({'torchvision', 'matplotlib', 'torch._dynamo'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_commands_start_without_torchvision_and_a_run_that_trains_without_dynamo(tmp_path):
    """Composing the config loads neither (Hydra resolves the help template, with its list of torchvision's
    classifiers, in every composition). torch's optimizers and FLOP counter load torch._dynamo at their first call,
    which a run that compiles nothing does not need (patches.eager_without_dynamo); with the patches off it is
    there, so the check sees what a run loads. Fresh processes (an environment of their own), which list every
    import."""
    knn, cnn, image = tmp_path / "knn", tmp_path / "cnn", tmp_path / "digit.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(image)
    both = {"torchvision", "torch._dynamo"}
    commands = [
        ("vl-train", [*TINY, "model=knn", f"hydra.run.dir={knn}"], {}, both, set()),
        ("vl-eval", [knn], {}, both, set()),
        ("vl-predict", [knn, image], {}, both, set()),
        ("vl-train", [*TINY, "model=cnn", "trainer.epochs=1", f"hydra.run.dir={cnn}"], {}, both, set()),
        ("vl-train", [*TINY, "model=linear", "features=hog", f"hydra.run.dir={tmp_path / 'hog'}"], {}, both, set()),
        (
            "vl-train",
            [*TINY, "model=linear", "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'released'}"],
            {"VL_NO_PATCHES": "1"},
            {"torchvision"},
            {"torch._dynamo"},
        ),
    ]
    for tool, args, env, absent, present in commands:
        done = run_tool(tool, args, tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1", **env})
        assert done.returncode == 0, done.stderr[-2000:]
        imported = {
            line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")
        }
        assert not absent & imported and present <= imported, (tool, args, env)


@pytest.mark.slow
def test_fp16_run_killed_mid_epoch_resumes_to_the_same_metrics(tmp_path):
    """The loss scale is part of the training state: a resumed fp16 run must not restart it at 65536."""
    args = [*LONG_EPOCHS, "trainer.precision=fp16", "trainer.channels_last=true"]
    uninterrupted = tmp_path / "uninterrupted"
    assert run_cli(args, uninterrupted).returncode == 0
    assert read_metrics(uninterrupted)["test/acc"] is not None

    run_dir = tmp_path / "run"
    process = start_vl_train([*args, "trainer.checkpoint_every_steps=7"], run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2 and at["batch"] > 0)
    process.kill()
    assert process.wait(timeout=60) == -signal.SIGKILL
    state = torch.load(run_dir / "last.pt", weights_only=True)
    assert state["position"]["epoch"] >= 2, "killed in epoch 2 or later, resumed from a step (or epoch) checkpoint"
    assert state["scaler"]["scale"] < 65536.0, "the scale has backed off, so restarting it would change the run"

    resumed = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(uninterrupted))


def test_fp16_on_the_cpu_runs_with_one_warning_that_names_what_to_use_instead(tmp_path):
    fp16 = run_cli([*TINY, "model=linear", "trainer.epochs=1", "trainer.precision=fp16"], tmp_path / "fp16")
    assert fp16.returncode == 0, fp16.stderr
    warnings = [
        line for line in (tmp_path / "fp16" / "train.log").read_text().splitlines() if "float16 is emulated" in line
    ]
    assert len(warnings) == 1 and "[WARNING]" in warnings[0]
    assert "trainer.precision=fp16 on the CPU" in warnings[0] and "use trainer.precision=32, or auto" in warnings[0]
    plain = run_cli([*TINY, "model=linear", "trainer.epochs=1", "trainer.precision=32"], tmp_path / "fp32")
    assert plain.returncode == 0 and "emulated" not in (tmp_path / "fp32" / "train.log").read_text()
