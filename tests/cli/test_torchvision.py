"""model=torchvision through the real commands: a pretrained network from a hub cache (under tmp, filled with a
torchvision model's own state dict: no network) trains an epoch with the default pictures, and vl-eval and vl-predict
score it on a machine whose cache is empty; offline without the file, and a wrong name, are one line and exit 2."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import models

import visionlab
from tests.conftest import read_metrics, run_cli, without_timing
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


def test_a_linear_probe_stopped_mid_epoch_resumes_to_the_same_metrics(trained, tmp_path, monkeypatch):
    """train=head from the hub's weights: stopped in epoch 2 and resumed, it ends as if never stopped (the frozen
    backbone, its BatchNorm statistics and the new head all come back from last.pt)."""
    from visionlab.training.callbacks import SaveAndStop

    monkeypatch.setenv("TORCH_HOME", str(trained["base"] / "torch"))
    args = [*TINY, "model.weights=DEFAULT", "model.fetch=cache", "model.train=head", "trainer.epochs=2"]
    args += ["trainer.batch_size=16", "logging=none"]
    after_step = SaveAndStop.after_step

    def stop_in_epoch_2(self, state, loss, images):
        if state.at.epoch == 2 and state.at.batch == 1:
            self.stop.signum = signal.SIGINT
        after_step(self, state, loss, images)

    monkeypatch.setattr(SaveAndStop, "after_step", stop_in_epoch_2)
    with pytest.raises(KeyboardInterrupt, match="last.pt saved"):
        visionlab.train(*args, f"hydra.run.dir={tmp_path / 'stopped'}")
    position = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["position"]
    assert position["epoch"] == 2 and position["batch"] == 1
    monkeypatch.setattr(SaveAndStop, "after_step", after_step)
    resumed = visionlab.train(f"resume={tmp_path / 'stopped'}")
    alone = visionlab.train(*args, f"hydra.run.dir={tmp_path / 'alone'}")
    assert resumed.metrics["status"] == "completed" and resumed.metrics["epochs"] == 2
    assert without_timing(resumed.metrics) == without_timing(alone.metrics)
