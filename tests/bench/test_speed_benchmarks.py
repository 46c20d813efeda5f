"""The speed benchmarks' smoke runs: time to accuracy, the allocator, start-up, memory, processes, the pictures'
share (throughput's: test_run_all.py)."""

from __future__ import annotations

import re

import pytest

from tests.bench.quick import quick_rows

pytestmark = pytest.mark.slow


def test_time_to_accuracy(shared_data, cifar_root, tmp_path):
    rows = quick_rows("mnist_time_to_accuracy", shared_data, cifar_root, tmp_path)
    ours, baseline, _ = rows.row(r"^MNIST CNN: time to >= 99\.0% test accuracy")
    assert re.search(r"test/acc \d+\.\d+%", ours) and re.match(r"\d+ \(extrapolated to 4 epochs", baseline)


def test_allocator(shared_data, cifar_root, tmp_path):
    rows = quick_rows("allocator", shared_data, cifar_root, tmp_path)
    for dataset in ("MNIST", "CIFAR-10"):
        ours, baseline, ratio = rows.row(rf"^allocator: {dataset} default CNN, ms per training step")
        assert (
            re.fullmatch(r"\d+\.\d", ours)
            and re.fullmatch(r"\d+\.\d \(glibc's defaults\)", baseline)
            and re.fullmatch(r"\d+\.\d\dx faster", ratio)
        )
        ours, baseline, _ = rows.row(rf"^allocator: {dataset} default CNN, page faults per training step")
        assert re.fullmatch(r"[\d,]+", ours) and re.fullmatch(r"[\d,]+ \(glibc's defaults\)", baseline)


def test_startup_and_memory(shared_data, cifar_root, tmp_path):
    ours, baseline, overhead = quick_rows("startup", shared_data, cifar_root, tmp_path).row(
        r"^start-up: command to the end of training step 1"
    )
    assert (
        ours.endswith("(vl-train)")
        and baseline.endswith("(bare script)")
        and re.fullmatch(r"[+-]\d+\.\d\d s overhead", overhead)
    )
    rows = quick_rows("memory", shared_data, cifar_root, tmp_path)
    for dataset in ("MNIST", "CIFAR-10"):
        ours, baseline, _ = rows.row(rf"^memory: peak RSS, {dataset} CNN")
        assert re.fullmatch(r"[\d,]+", ours) and "torch alone" in baseline


def test_processes(shared_data, cifar_root, tmp_path):
    rows = quick_rows("processes", shared_data, cifar_root, tmp_path)
    for measure in ("training s", "whole command s"):
        ours, baseline, ratio = rows.row(rf"^2 processes \(trainer\.devices=2.*, {measure}$")
        assert (
            re.fullmatch(r"\d+\.\d+", ours) and baseline.endswith(" (1 process)") and re.fullmatch(r"\d+\.\d\dx", ratio)
        )


def test_pictures_overhead(shared_data, cifar_root, tmp_path):
    rows = quick_rows("pictures_overhead", shared_data, cifar_root, tmp_path)
    ours, baseline, overhead = rows.row(r"^pictures: the default job, launch to exit, every picture on vs off")
    assert (
        re.match(r"\d+\.\d\d \(on: ", ours)
        and re.match(r"\d+\.\d\d \(off: ", baseline)
        and re.fullmatch(r"[+-]\d+\.\d%", overhead)
    )
    ours, baseline, share = rows.row(r"^pictures: issue 19's saliency, embedding and layer table")
    assert re.match(
        r"-?\d+\.\d{3} \(layer table \d+\.\d{3}, saliency picture \d+\.\d{3}, embedding", ours
    ) and re.fullmatch(r"-?\d+\.\d%", share)
