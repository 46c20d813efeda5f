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

    refused = run_cli(
        ["--config-dir", str(EXAMPLE), "model=two_layer", "model.width=0", *TINY], tmp_path / "bad", env=env
    )
    assert refused.returncode == 2
    assert "model.width=0 is invalid: use a whole number of at least 1" in refused.stderr


OWN_MODELS = '''
import math
from torch import nn
from visionlab.errors import SettingRejected


class Misspelled(nn.Module):
    """A bug: its __init__ reads a key its own dict does not have."""

    def __init__(self, in_shape, num_classes, width: int = 8):
        super().__init__()
        sizes = {"width": width}
        self.net = nn.Linear(math.prod(in_shape), sizes["widht"])


class Picky(nn.Module):
    """States on purpose that a width above the pixel count is wrong."""

    def __init__(self, in_shape, num_classes, width: int = 8):
        super().__init__()
        if width > math.prod(in_shape):
            raise SettingRejected(f"model.width={width} is more than the {math.prod(in_shape)} pixels: use at most that")
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))

    def forward(self, x):
        return self.net(x)
'''  # noqa: E501 (a line of the user's module above: the string is written to a file as it is)


def own_configs(root) -> dict:
    """A user's --config-dir with the two models above; the environment that puts their module on the path."""
    (root / "model").mkdir(parents=True)
    (root / "own_models.py").write_text(OWN_MODELS)
    (root / "model" / "misspelled.yaml").write_text("_target_: own_models.Misspelled\nwidth: 8\n")
    (root / "model" / "picky.yaml").write_text("_target_: own_models.Picky\nwidth: 8\n")
    return {"PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def test_a_bug_in_an_own_model_is_a_bug_and_its_deliberate_rejection_a_config_error(tmp_path):
    """docs/architecture.md, "Config checks": only a declared check, an argument that does not bind, or a
    rejection stated on purpose (SettingRejected) is bad config; anything else a component raises is a bug."""
    conf = tmp_path / "conf"
    env = own_configs(conf)
    run_dir = tmp_path / "bug"
    bug = run_cli(["--config-dir", str(conf), "model=misspelled", *TINY], run_dir, env=env)
    assert bug.returncode == 1, bug.stderr
    (line,) = [line for line in bug.stderr.splitlines() if line.strip()]
    assert "unexpected KeyError: 'widht'" in line and f"(a bug: the traceback is in {run_dir / 'train.log'})" in line
    log_text = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log_text and 'sizes["widht"]' in log_text
    assert "Traceback" not in bug.stderr

    rejected = run_cli(
        ["--config-dir", str(conf), "model=picky", "model.width=5000", *TINY], tmp_path / "picky", env=env
    )
    assert rejected.returncode == 2, rejected.stderr
    (line,) = [line for line in rejected.stderr.splitlines() if line.strip()]
    assert (
        "model=picky rejected model.width=5000: model.width=5000 is more than the 784 pixels: use at most that" in line
    )
    assert "Traceback" not in rejected.stderr + (tmp_path / "picky" / "train.log").read_text()


def test_a_key_an_own_model_does_not_take_is_named_with_the_one_it_resembles(tmp_path):
    conf = tmp_path / "conf"
    env = own_configs(conf)
    refused = run_cli(["--config-dir", str(conf), "model=picky", "+model.widht=5", *TINY], tmp_path / "run", env=env)
    assert refused.returncode == 2
    (line,) = [line for line in refused.stderr.splitlines() if line.strip()]
    assert "model.widht is not an argument of own_models.Picky, which takes in_shape, num_classes, width" in line
    assert "did you mean model.width?" in line
