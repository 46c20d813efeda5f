"""features=network with torchvision's networks: a pretrained one directly (features.network.torchvision), its
features exactly the backbone's pooled output, its weights from a hub cache or a file; a run on them read back by
vl-eval from the cached file only (never downloaded, never random); and a model=torchvision run as
features.network.checkpoint, rebuilt without any hub file. No network: the "pretrained" weights are a torchvision
model's own state dict, saved into a hub cache under tmp (TORCH_HOME) or a file, as tests/models/ do.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchvision import models

from tests.conftest import config_error, read_metrics, run_cli, run_tool
from visionlab.checkpoint_format import run_checkpoint
from visionlab.data.synthetic import Synthetic
from visionlab.errors import UserError
from visionlab.features.network import NetworkFeatures
from visionlab.models.torchvision import TorchvisionModel, hub_file
from visionlab.trust import keep_writes_here

WEIGHTS = models.ResNet18_Weights.IMAGENET1K_V1  # resnet18's DEFAULT
DATA = ["dataset.train_size=60", "dataset.test_size=20", "trainer.threads=1", "trainer.device=cpu", "logging=none"]
PRETRAINED = [
    "features=network",
    "features.network.torchvision=resnet18",
    "features.network.weights=DEFAULT",
    "features.network.input_size=[32,32]",  # 224 by default: far more time on a CPU
]


def saved(net: torch.nn.Module, file: Path) -> dict[str, torch.Tensor]:
    file.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), file)
    return net.state_dict()


@pytest.fixture
def hub(tmp_path, monkeypatch) -> dict[str, torch.Tensor]:
    """A hub cache of this test's own (TORCH_HOME) holding resnet18's DEFAULT weights: a seeded random network's."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    return saved(models.resnet18(), hub_file(WEIGHTS))


def by_hand(state: dict[str, torch.Tensor], images: torch.Tensor, num_classes: int = 1000):
    """resnet18 with `state` on uint8 images as its weights expect them (pixels in [0, 1], 3 channels, ImageNet's
    mean and std, 32x32): its pooled features (the input of fc) and its class scores."""
    net = models.resnet18(num_classes=num_classes)
    net.load_state_dict(state)
    net.eval()
    transforms = WEIGHTS.transforms()
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (transforms.mean, transforms.std))
    x = (images.float().expand(-1, 3, -1, -1) / 255 - mean) / std
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    with torch.no_grad():
        return torch.nn.Sequential(*list(net.children())[:-1])(x).flatten(1), net(x)


def test_pretrained_features_are_the_backbones_pooled_output_from_the_hub_cache_or_a_file(hub, tmp_path):
    images = Synthetic(train_size=8, test_size=1).load().train.images  # grey 28x28
    pretrained = NetworkFeatures(torchvision="resnet18", weights="DEFAULT", fetch="cache", input_size=[32, 32])
    assert pretrained.size((1, 28, 28)) == 512 and pretrained.layer_name == "fc" and pretrained.takes_input
    pooled, _ = by_hand(hub, images)
    torch.testing.assert_close(pretrained(images), pooled, rtol=1e-4, atol=1e-5)
    assert torch.equal(pretrained.model.fc.weight, hub["fc.weight"])  # the head is the weights' own, kept
    said = pretrained.describe((1, 28, 28))
    assert f"torchvision's resnet18, weights DEFAULT from {hub_file(WEIGHTS)}, the input of fc" in said
    assert "grey repeated into 3 channels and resized from 28x28 to 32x32" in said

    # a file of one's own, from a network trained for 10 classes: its head's output, the class scores, is a layer
    torch.manual_seed(1)
    mine = saved(models.resnet18(num_classes=10), tmp_path / "mine.pt")
    own = NetworkFeatures(torchvision="resnet18", weights=str(tmp_path / "mine.pt"), input_size=[32, 32], layer="fc")
    _, scores = by_hand(mine, images, num_classes=10)
    torch.testing.assert_close(own(images), scores, rtol=1e-4, atol=1e-5)
    # the features cache tells the networks apart by their content, and the layers apart
    assert pretrained.cache_key()["sha256"] != own.cache_key()["sha256"]
    assert pretrained.cache_key()["layer"] == ["fc", "input"] and own.cache_key()["layer"] == ["fc", "output"]


def test_an_untrained_network_is_the_same_each_time_and_the_log_says_so(caplog):
    images = Synthetic(train_size=4, test_size=1).load().train.images
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        first = NetworkFeatures(torchvision="mobilenet_v3_small", input_size=[32, 32])
    assert torch.equal(torch.rand(3), expected)  # the run's random numbers are left alone
    second = NetworkFeatures(torchvision="mobilenet_v3_small", input_size=[32, 32])
    assert torch.equal(first(images), second(images)) and first.cache_key() == second.cache_key()
    assert "the features come from an untrained mobilenet_v3_small" in caplog.text
    assert first.size((3, 32, 32)) == 1024  # the input of classifier.3, its last Linear


@pytest.fixture(scope="module")
def knn_on_pretrained(tmp_path_factory) -> dict[str, Path]:
    """kNN on resnet18's pooled features, its weights read from a hub cache of the run's own."""
    base = tmp_path_factory.mktemp("pretrained")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(base / "torch"))  # the fork server's child gets the test's environment
        torch.manual_seed(0)
        saved(models.resnet18(), hub_file(WEIGHTS))
        result = run_cli([*DATA, *PRETRAINED, "model=knn", f"features.cache_dir={base / 'cache'}"], base / "run")
        file = hub_file(WEIGHTS)
    assert result.returncode == 0, result.stderr
    return {"base": base, "run": base / "run", "file": file}


def test_vl_eval_reads_the_weights_from_the_cache_and_never_downloads_or_guesses(knn_on_pretrained, monkeypatch):
    run, base = knn_on_pretrained["run"], knn_on_pretrained["base"]
    log = (run / "train.log").read_text()
    said = "features: 512 numbers per image (network activations (torchvision's resnet18, weights DEFAULT from "
    assert said + f"{knn_on_pretrained['file']}, the input of fc" in log
    stored = torch.load(run / "last.pt", weights_only=True)["config"]
    assert stored["features"]["network"]["fetch"] == "download"  # as the run had it; read back, it is cache
    assert keep_writes_here(stored)["features"]["network"]["fetch"] == "cache"

    monkeypatch.setenv("TORCH_HOME", str(base / "torch"))
    scored = run_tool("vl-eval", [run], base, timeout=120)
    assert scored.returncode == 0, scored.stderr
    report = json.loads((run / "eval_last_test.json").read_text())
    assert report["test/acc"] == read_metrics(run)["test/acc"]

    empty = base / "elsewhere"  # another machine: nothing in its hub cache
    monkeypatch.setenv("TORCH_HOME", str(empty))
    refused = run_tool("vl-eval", [run], base, timeout=120)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, refused.stderr
    where = empty / "hub" / "checkpoints" / hub_file(WEIGHTS).name
    assert f"put the file from {WEIGHTS.url} at {where}" in lines[0] and "features.network.fetch=cache" in lines[0]
    assert not empty.exists()  # nothing downloaded, nothing computed from random weights


@pytest.fixture(scope="module")
def fine_tuned(tmp_path_factory) -> Path:
    """One epoch of model=torchvision (resnet18, weights=DEFAULT from a hub cache of its own, fetch=download)."""
    base = tmp_path_factory.mktemp("fine_tuned")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(base / "torch"))
        torch.manual_seed(0)
        saved(models.resnet18(), hub_file(WEIGHTS))
        args = ["model=torchvision", "model.weights=DEFAULT", "model.input_size=[16,16]", "trainer.epochs=1"]
        result = run_cli([*DATA, *args, "trainer.batch_size=32"], base / "run")
    assert result.returncode == 0, result.stderr
    return base / "run"


def test_a_model_torchvision_run_gives_features_without_any_hub_file(fine_tuned, tmp_path, monkeypatch):
    empty = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(empty))
    downloads = []
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *args, **kwargs: downloads.append(args))
    features = NetworkFeatures(checkpoint=str(fine_tuned))
    assert features.size((1, 28, 28)) == 512 and features.layer_name == "net.fc"
    # by hand: the run's model from its checkpoint, its images standardized as the run did, then its adapter
    file, state, _ = run_checkpoint(fine_tuned)
    assert file == features.file
    model = TorchvisionModel((1, 28, 28), 10, weights="DEFAULT", fetch="none", input_size=[16, 16])
    model.load_state_dict(state.model)
    model.eval()
    assert torch.equal(features.model.adapter.scale, state.model["adapter.scale"])  # the weights' normalization
    assert not torch.equal(state.model["adapter.scale"], torch.ones(1, 3, 1, 1))
    images = Synthetic(train_size=8, test_size=1).load().train.images
    mean, std = (torch.tensor(state.inputs[key]).view(1, -1, 1, 1) for key in ("mean", "std"))
    x = model.adapter(images.float() * (1 / (255 * std)) - mean / std)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(model.net.children())[:-1])(x).flatten(1)
    torch.testing.assert_close(features(images), expected, rtol=1e-4, atol=1e-5)
    assert not downloads and not empty.exists()
    # another name for the same file: the same features, read from the same cache entry
    (tmp_path / "copy.pt").write_bytes(file.read_bytes())
    assert NetworkFeatures(checkpoint=str(tmp_path / "copy.pt")).cache_key() == features.cache_key()


def one_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in result.stdout, result.stderr
    return lines[0]


def test_bad_values_are_one_line_naming_the_value_and_what_would_do(fine_tuned, tmp_path, monkeypatch):
    said = config_error(["features=network", "model=knn", "features.network.torchvision=resnet19"])
    assert "features.network.torchvision='resnet19' is unknown: did you mean resnet18" in said and "or null" in said
    said = config_error(["features=network", "model=knn", "features.network.fetch=none"])
    assert "features.network.fetch='none' is unknown: use one of download, cache" in said

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # empty
    tv = ["model=knn", "features=network", "features.network.torchvision=resnet18"]
    cases = {
        "both": ([*tv, f"features.network.checkpoint={fine_tuned}"], "pretrained: not both"),
        "weights": ([*tv, "features.network.weights=IMAGENET_V1"], "weights=IMAGENET_V1 is neither one of resnet18's"),
        "offline": ([*tv, "features.network.weights=DEFAULT", "features.network.fetch=cache"], WEIGHTS.url),
    }
    lines = {name: one_line(run_cli([*DATA, *args], tmp_path / name)) for name, (args, _) in cases.items()}
    for name, (_, says) in cases.items():
        assert says in lines[name], (name, lines[name])
    assert "did you mean IMAGENET1K_V1" in lines["weights"]
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / hub_file(WEIGHTS).name) in lines["offline"]
    assert not (tmp_path / "torch").exists()
    with pytest.raises(UserError, match="pretrained: the network whose activations"):
        NetworkFeatures()
    with pytest.raises(UserError, match="features.network.weights='X' is for features.network.torchvision"):
        NetworkFeatures(checkpoint=str(fine_tuned), weights="X")
