"""Configs from outside the repository: the worked example in docs/examples/my_configs, through the real CLI."""

from __future__ import annotations

import os

from tests.conftest import REPO, TINY, read_metrics, run_cli

EXAMPLE = REPO / "docs" / "examples" / "my_configs"


def test_a_folder_of_own_configs_adds_a_model_and_an_experiment(tmp_path):
    env = {"PYTHONPATH": f"{EXAMPLE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_dir = tmp_path / "run"
    result = run_cli(["--config-dir", str(EXAMPLE), "experiment=quick", "trainer.threads=1"], run_dir, env=env)
    assert result.returncode == 0, result.stderr
    assert "model: TwoLayer with" in (run_dir / "train.log").read_text()
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["epochs"] == 1

    refused = run_cli(["--config-dir", str(EXAMPLE), "model=two_layer", "model.width=0", *TINY], tmp_path / "bad", env=env)
    assert refused.returncode == 2
    assert "model.width=0 is invalid: use a whole number of at least 1" in refused.stderr
