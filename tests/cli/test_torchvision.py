"""model=torchvision through the real commands: a pretrained network from a hub cache (under tmp, filled with a
torchvision model's own state dict: no network) trains an epoch with the default pictures, and vl-eval and vl-predict
score it on a machine whose cache is empty; offline without the file, and a wrong name, are one line and exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models

import visionlab
from tests.conftest import read_metrics, run_cli
from visionlab.models.torchvision import hub_file

TINY = [
    "model=torchvision",
    "model.input_size=[16,16]",
    "dataset.train_size=72",
    "dataset.test_size=24",
    "trainer.epochs=1",
    "trainer.batch_size=32",
    "trainer.threads=1",
    "trainer.device=cpu",
]
WEIGHTS = models.ResNet18_Weights.IMAGENET1K_V1


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One epoch of resnet18 with weights=DEFAULT, read from a hub cache of the run's own (TORCH_HOME)."""
    base = tmp_path_factory.mktemp("torchvision")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(base / "torch"))  # the fork server's child gets the test's environment
        torch.manual_seed(0)
        file = hub_file(WEIGHTS)
        file.parent.mkdir(parents=True)
        torch.save(models.resnet18().state_dict(), file)
        result = run_cli([*TINY, "model.weights=DEFAULT", "model.fetch=cache"], base / "run")
    assert result.returncode == 0, result.stderr
    return {"base": base, "run": base / "run", "file": file}


def test_a_pretrained_network_trains_with_the_default_pictures(trained):
    metrics = read_metrics(trained["run"])
    assert metrics["status"] == "completed" and metrics["test/acc"] is not None
    log = (trained["run"] / "train.log").read_text()
    assert f"torchvision's resnet18, weights DEFAULT from {trained['file']}" in log
    assert "resized from 28x28 to 16x16" in log and "grey repeated to 3 channels" in log
    assert "Traceback" not in log and "ERROR" not in log
    state = torch.load(trained["run"] / "last.pt", weights_only=True)["model"]
    assert state["net.fc.weight"].shape == (10, 512) and "adapter.scale" in state


def test_eval_and_predict_need_no_hub_file_and_reproduce_the_test(trained, monkeypatch):
    """What vl-eval and vl-predict run (visionlab.evaluate and .predict: the same calls, in this process)."""
    empty = trained["base"] / "elsewhere"  # another machine: nothing in its hub cache
    monkeypatch.setenv("TORCH_HOME", str(empty))
    report = visionlab.evaluate(trained["run"])
    assert report["test/acc"] == read_metrics(trained["run"])["test/acc"]
    assert json.loads((trained["run"] / "eval_last_test.json").read_text())["test/acc"] == report["test/acc"]
    picture = trained["base"] / "asked.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 20, 3), dtype=np.uint8)).save(picture)
    found = visionlab.predict(trained["run"], picture, top_k=2)
    assert len(found) == 1 and len(found[0]["top"]) == 2 and found[0]["predicted"] in report["classes"]
    assert not empty.exists()


def test_offline_without_the_file_says_where_to_put_it_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    result = run_cli([*TINY, "model.weights=IMAGENET1K_V1", "model.fetch=cache"], tmp_path / "run")
    assert result.returncode == 2
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and str(hub_file(WEIGHTS)) in said[0] and WEIGHTS.url in said[0], result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


def test_a_wrong_name_is_one_line_with_the_close_ones(tmp_path):
    result = run_cli([*TINY, "model.name=resnet19"], tmp_path / "run")
    assert result.returncode == 2
    said = result.stderr.strip().splitlines()
    assert len(said) == 1 and "model.name='resnet19' is unknown: did you mean resnet18" in said[0], result.stderr
