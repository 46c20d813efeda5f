"""model=torchvision: torchvision's networks with their weights read safely, a new head, an input adapter, and a
linear probe that keeps the rest as the weights had it. No network: weights are a torchvision model's own state
dict, saved to a file or into a hub cache under tmp (docs/models.md, "torchvision")."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
from torchvision import models

from tests.conftest import config_error
from visionlab.errors import SettingRejected, UserError
from visionlab.models.torchvision import TorchvisionModel, hub_file
from visionlab.reporting.layer_summary import layer_table
from visionlab.trust import keep_writes_here

TINY = {"input_size": [16, 16]}


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty torch hub cache of this test's own (TORCH_HOME, as a user would set it)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub"


def saved(net: torch.nn.Module, file: Path) -> dict[str, torch.Tensor]:
    file.parent.mkdir(parents=True, exist_ok=True)
    state = net.state_dict()
    torch.save(state, file)
    return state


def assert_loaded(model: TorchvisionModel, state: dict[str, torch.Tensor]) -> None:
    """Every weight and BatchNorm statistic but the head's is the file's; the head is new."""
    own = model.net.state_dict()
    body = [key for key in own if not key.startswith(f"{model.head}.") and not key.endswith("num_batches_tracked")]
    assert body and all(torch.equal(own[key], state[key]) for key in body)


def test_a_local_file_gives_every_weight_but_the_head_which_is_new_for_the_classes(tmp_path):
    torch.manual_seed(1)
    state = saved(models.resnet18(), tmp_path / "mine.pt")
    model = TorchvisionModel((3, 16, 16), num_classes=7, weights=str(tmp_path / "mine.pt"), **TINY)
    assert_loaded(model, state)
    assert model.head == "fc" and model.net.fc.out_features == 7 and model.net.fc.in_features == 512
    assert model(torch.zeros(2, 3, 16, 16)).shape == (2, 7)


def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"fc.weight": Payload()}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="weights_only") as error:
        TorchvisionModel((3, 16, 16), 2, weights=str(tmp_path / "evil.pt"), **TINY)
    assert "\n" not in str(error.value) and not marker.exists()


def test_hub_weights_are_read_from_the_cache_by_name_and_by_default(hub):
    torch.manual_seed(2)
    chosen = models.ResNet18_Weights.IMAGENET1K_V1
    file = hub_file(chosen)
    assert file == hub / "checkpoints" / "resnet18-f37072fd.pth"  # the name torchvision gives it
    state = saved(models.resnet18(), file)
    for name in ("IMAGENET1K_V1", "DEFAULT"):
        model = TorchvisionModel((1, 16, 16), 3, weights=name, fetch="cache", **TINY)
        assert_loaded(model, state)


def test_densenet_files_with_torchvisions_old_key_names_load(tmp_path):
    torch.manual_seed(3)
    state = models.densenet121().state_dict()
    old = {  # as in torchvision's files, whose BatchNorms predate num_batches_tracked
        key.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): value
        for key, value in state.items()
        if not (".denselayer" in key and key.endswith("num_batches_tracked"))
    }
    assert any(".norm.1." in key for key in old)
    torch.save(old, tmp_path / "densenet.pth")
    model = TorchvisionModel((3, 32, 32), 4, name="densenet121", weights=str(tmp_path / "densenet.pth"))
    assert_loaded(model, state)


def test_squeezenets_last_conv_is_its_head(tmp_path):
    torch.manual_seed(4)
    state = saved(models.squeezenet1_1(), tmp_path / "squeeze.pt")
    model = TorchvisionModel((3, 32, 32), 5, name="squeezenet1_1", weights=str(tmp_path / "squeeze.pt"))
    assert_loaded(model, state)
    assert model.head == "classifier.1" and model.net.classifier[1].out_channels == 5
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


def test_offline_and_not_cached_says_in_one_line_where_to_put_the_file(hub, monkeypatch):
    chosen = models.MobileNet_V3_Small_Weights.DEFAULT
    with pytest.raises(UserError) as error:
        TorchvisionModel((3, 16, 16), 2, name="mobilenet_v3_small", weights="DEFAULT", fetch="cache", **TINY)
    said = str(error.value)
    assert str(hub_file(chosen)) in said and chosen.url in said and "\n" not in said

    def no_network(url, destination, *args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(UserError, match="could not be downloaded .URLError") as error:
        TorchvisionModel((3, 16, 16), 2, name="mobilenet_v3_small", weights="DEFAULT", **TINY)
    assert str(hub_file(chosen)) in str(error.value) and "\n" not in str(error.value)


def test_a_download_lands_in_the_hub_cache_where_torchvision_keeps_it(hub, monkeypatch):
    torch.manual_seed(5)
    state = models.mobilenet_v3_small().state_dict()
    asked = []

    def download(url, destination, hash_prefix, progress):
        asked.append((url, hash_prefix))
        torch.save(state, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    model = TorchvisionModel((3, 16, 16), 2, name="mobilenet_v3_small", weights="IMAGENET1K_V1", **TINY)
    chosen = models.MobileNet_V3_Small_Weights.IMAGENET1K_V1
    digits = hub_file(chosen).name.split("-")[-1].split(".")[0]  # torch.hub checks the file's sha256 against them
    assert asked == [(chosen.url, digits)] and hub_file(chosen).is_file()
    assert_loaded(model, state)


def test_fetch_none_reads_nothing_and_builds_what_the_weights_would(hub):
    """What vl-eval builds from a checkpoint's config: no file needed, the same shapes, input and buffers."""
    model = TorchvisionModel((1, 20, 20), 3, weights="DEFAULT", fetch="none", pixel_stats=(torch.tensor([0.5]),) * 2)
    assert model.adapter.size == (224, 224) and model.net.fc.out_features == 3
    assert not hub.exists()
    stored = {"model": {"_target_": "visionlab.models.torchvision.TorchvisionModel", "fetch": "download"}}
    assert keep_writes_here(stored)["model"]["fetch"] == "none"  # a checkpoint's config, as vl-eval reads it


def test_train_head_learns_the_head_only_and_keeps_batchnorm_statistics(tmp_path):
    torch.manual_seed(6)
    saved(models.mobilenet_v3_small(), tmp_path / "w.pt")  # BatchNorm, and dropout before its head
    model = TorchvisionModel((3, 16, 16), 4, name="mobilenet_v3_small", weights=str(tmp_path / "w.pt"), train="head")
    head = {"net.classifier.3.weight", "net.classifier.3.bias"}
    assert {name for name, p in model.named_parameters() if p.requires_grad} == head
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.train()  # as the trainer does at every epoch
    assert model.training and model.net.classifier[3].training
    assert not any(module.training for name, module in model.net.named_modules() if name != "classifier.3")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=0.1)  # as a run builds it
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.randn(8, 3, 16, 16)), torch.arange(8) % 4)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {key for key in after if not torch.equal(after[key], before[key])}
    assert changed == head  # BatchNorm's running_mean, running_var and counts unchanged
    model.eval()
    model.train(True)
    assert not model.net.features[0][1].training


def test_train_all_trains_batchnorm_as_usual():
    model = TorchvisionModel((3, 16, 16), 4, **TINY)
    model.train()
    assert model.net.bn1.training and all(p.requires_grad for p in model.parameters())


def test_grey_images_become_three_channels_normalized_as_the_weights_were():
    pixels = torch.rand(2, 1, 8, 8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.2])
    standardized = (pixels - mean) / std  # what the pipeline hands every model (data/splits.py)
    model = TorchvisionModel((1, 8, 8), 2, normalize="weights", input_size=None, pixel_stats=(mean, std))
    seen = model.adapter(standardized)
    imagenet = models.ResNet18_Weights.DEFAULT.transforms()
    expected = (pixels.expand(-1, 3, -1, -1) - torch.tensor(imagenet.mean).view(1, 3, 1, 1)) / torch.tensor(
        imagenet.std
    ).view(1, 3, 1, 1)
    assert seen.shape == (2, 3, 8, 8) and torch.allclose(seen, expected, atol=1e-5)
    as_data = TorchvisionModel((1, 8, 8), 2, normalize="data", input_size=[12, 10], pixel_stats=(mean, std))
    resized = as_data.adapter(standardized)
    assert resized.shape == (2, 3, 12, 10) and torch.equal(resized[:, 0], resized[:, 2])


def test_the_defaults_follow_the_weights(tmp_path):
    random = TorchvisionModel((3, 20, 20), 2)  # weights null: the images as they are
    assert random.adapter.size == (20, 20)
    assert torch.equal(random.adapter.scale, torch.ones(1, 3, 1, 1))
    stats = (torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.25, 0.25, 0.25]))
    pretrained = TorchvisionModel((3, 20, 20), 2, weights="DEFAULT", fetch="none", pixel_stats=stats)
    assert pretrained.adapter.size == (224, 224) and not torch.equal(pretrained.adapter.scale, random.adapter.scale)
    assert "adapter.scale" in pretrained.state_dict()  # a checkpoint carries the conversion


def test_bad_values_are_one_line_naming_what_is_accepted():
    said = config_error(["model=torchvision", "model.name=resnet19"])
    assert "model.name='resnet19' is unknown: did you mean resnet18" in said and "mobilenet_v3_small" in said
    assert "model.train='probe' is unknown" in config_error(["model=torchvision", "model.train=probe"])
    assert "model.fetch" in config_error(["model=torchvision", "model.fetch=true"])
    with pytest.raises(SettingRejected, match="did you mean IMAGENET1K_V1"):
        TorchvisionModel((3, 16, 16), 2, weights="IMAGENET_V1")
    with pytest.raises(SettingRejected, match="no such file"):
        TorchvisionModel((3, 16, 16), 2, weights="missing/weights.pt")
    with pytest.raises(SettingRejected, match="takes at least 63x63"):
        TorchvisionModel((3, 32, 32), 2, name="alexnet")
    with pytest.raises(SettingRejected, match="its weights take 224x224 only"):
        TorchvisionModel((3, 32, 32), 2, name="vit_b_16", weights="DEFAULT", fetch="none", input_size=[256, 256])
    with pytest.raises(SettingRejected, match="grey or colour"):
        TorchvisionModel((4, 32, 32), 2)


@pytest.mark.parametrize(
    "name",
    ["googlenet", "inception_v3", "regnet_x_400mf", "vit_b_16", "maxvit_t"],  # each with its own way
)
def test_every_family_builds_on_the_meta_device_as_the_memory_check_does(name):
    """budget.py builds the model on the meta device and runs the layer table on it (RegNet cannot be built there)."""
    with torch.device("meta"):
        model = TorchvisionModel((1, 28, 28), 10, name=name, weights="DEFAULT", fetch="none")
    table = layer_table(model, (1, 28, 28))
    assert table.params > 0 and (10,) in [layer.shape for layer in table.layers]  # the new head's scores
