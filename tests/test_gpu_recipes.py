"""The airbench recipes and bench/gpu.py on the CPU: experiment=cifar10_gpu and cifar10_fast each train one
step through the real CLI, and the GPU script's --dry-run runs every part of it for one step."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, cpu_has_native_bfloat16, read_metrics, run_cli

# 100 colour images: 2 for val (split.val_fraction=0.02), 98 to train on, under one batch of either recipe.
ONE_STEP = [
    "dataset=synthetic",
    "dataset.shape=[3,32,32]",
    "dataset.train_size=100",
    "dataset.test_size=20",
    "trainer.epochs=1",
    "trainer.device=cpu",
    "trainer.threads=1",
]


@pytest.mark.parametrize(
    "recipe,extra",
    [
        (
            "cifar10_gpu",
            ["trainer.precision=32"],
        ),  # its bf16 is a GPU's: 13x slower than float32 on a CPU without AVX-512 BF16
        ("cifar10_fast", []),
    ],
)
def test_each_airbench_recipe_trains_one_step_on_the_cpu_through_the_cli(recipe, extra, tmp_path):
    result = run_cli([f"experiment={recipe}", *ONE_STEP, *extra], tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "completed" and metrics["steps"] == 1 and math.isfinite(metrics["train/loss"])
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["model"]["features.0._extra_state"] == {"fitted": True}  # whitened from its 98 clean images
    assert state["model"]["features.0.conv.weight"].abs().sum() > 0
    assert "epoch 1 step 1" in result.stdout or "completed after 1 epoch (1 step)" in result.stdout
    # airbench94's recipe whole in both, which bench/cifar10_fast.py measures beside airbench itself on a CPU and
    # bench/gpu.py on a GPU
    config = state["config"]
    assert config["optimizer"]["nesterov"] and config["loss"]["label_smoothing"] == 0.2
    assert (config["optimizer"]["lr"], config["trainer"]["batch_size"], config["trainer"]["drop_last"]) == (
        1.5,
        1024,
        True,
    )
    assert config["scheduler"]["_target_"] == "visionlab.optimization.piecewise"
    assert (config["model"]["whiten_images"], config["model"]["whiten_bias_epochs"]) == (5000, 3)
    assert (config["dataset"]["augment"]["flip"], config["dataset"]["augment"]["crop_padding_mode"]) == (
        "alternate",
        "reflect",
    )
    if recipe == "cifar10_fast":  # precision auto: bf16 where the CPU computes it, and the log says which
        assert f"precision {'bf16' if cpu_has_native_bfloat16() else '32'}" in result.stdout


def test_the_gpu_script_without_a_gpu_says_so_and_how_to_check_it(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: bench/gpu.py would run for minutes")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu.py")], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert done.returncode == 2 and "no CUDA GPU here" in done.stderr and "--dry-run" in done.stderr


@pytest.mark.slow
def test_the_gpu_script_dry_run_runs_every_part_for_one_step_into_one_table(shared_data, cifar_root):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "gpu.py"),
            "--dry-run",
            "--mnist",
            str(shared_data),
            "--cifar",
            str(cifar_root),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    cells = [
        [c.strip() for c in line.strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith("| GPU: ")
    ]
    rows = {row[0]: row[1:] for row in cells}
    assert "machine: " in done.stdout

    def row(pattern: str) -> list[str]:
        (name,) = [name for name in rows if re.search(pattern, name)]
        return rows[name]

    tests = row(r"^GPU: pytest -m gpu$")[0]
    assert re.fullmatch(r"\d+ skipped in \d+ s", tests), tests  # no CUDA here: every GPU test skips, none fails
    ours, host, _ = row(r"^GPU: MNIST CNN, time to >= 99\.0% test accuracy")
    assert re.search(r"test/acc \d+\.\d+% after 1 epoch, cpu\)$", ours) and host.endswith(
        "(the same on the host's CPU)"
    )
    ours, compiled, _ = row(r"^GPU: CIFAR-10 experiment=cifar10_gpu, time to >= 94\.0%")
    assert re.search(r"test/acc \d+\.\d+% after 1 epoch, cpu\)$", ours) and compiled.startswith("not run in --dry-run")
    one, _, _ = row(r"^GPU: CIFAR-10 experiment=cifar10_gpu on 1 process, run seconds")
    two, baseline, efficiency = row(r"^GPU: CIFAR-10 experiment=cifar10_gpu on 2 processes, run seconds")
    assert re.fullmatch(r"\d+\.\d \(test/acc \d+\.\d\d%, cpu\)", two) and one.endswith(", cpu)")
    assert re.fullmatch(r"\d+\.\d \(1 process\)", baseline)
    assert re.fullmatch(r"\d+% scaling efficiency \(\d+\.\d\dx faster\)", efficiency)
    for distance in ("L2", "L1"):
        ours, brute, verdict = row(
            rf"^GPU: kNN MNIST {distance}, k=3: fit \+ predict, s \(2,000 train, 300 test, cpu, training images "
            r"stored as torch.int8\)"
        )
        assert re.fullmatch(r"\d+\.\d\d", ours) and brute.endswith("(exact brute force, same device)")
        assert verdict.endswith("x faster; indices equal, ties included")
