"""The foundation's accuracy targets on real data, with default settings (slow: about 2 minutes)."""

from __future__ import annotations

import pytest

from tests.conftest import read_metrics, run_cli

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model,target", [("cnn", 0.990), ("mlp", 0.975), ("linear", 0.92)])
def test_mnist_defaults_reach_the_target(tmp_path, shared_data, model, target):
    run_dir = tmp_path / "run"
    result = run_cli(["dataset=mnist", f"dataset.root={shared_data}", f"model={model}"], run_dir, timeout=900)
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(run_dir)
    assert metrics["test/acc"] >= target, metrics


def test_cifar10_cnn_learns_in_one_epoch(tmp_path, cifar_root):
    run_dir = tmp_path / "run"
    result = run_cli(
        ["dataset=cifar10", f"dataset.root={cifar_root}", "model=cnn", "trainer.epochs=1"], run_dir, timeout=900
    )
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir)["test/acc"] >= 0.50
