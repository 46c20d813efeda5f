"""features=network: a trained network's activations as features, exactly its layer's numbers, cached per checkpoint
content and layer, refused in one line where they cannot be had, and never running what a checkpoint brings.

One small CNN is trained once (the module's fixture); every other run reads it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import visionlab
from tests.conftest import read_metrics, run_cli, without_timing
from visionlab.data.splits import channel_stats, holdout_indices
from visionlab.data.synthetic import SHAPES, Synthetic
from visionlab.features.network import NetworkFeatures, fitted
from visionlab.models.cnn import CNN

DATA = ["dataset.train_size=300", "dataset.test_size=100", "trainer.threads=1", "trainer.device=cpu"]
SMALL_CNN = ["model=cnn", "model.channels=[8,16]", "model.hidden=[32]"]
NETWORK = [*DATA, *SMALL_CNN, "trainer.epochs=1", "logging=none"]


@pytest.fixture(scope="module")
def network(tmp_path_factory) -> Path:
    """A one-epoch CNN run on 300 synthetic images (its recipe tests best.pt)."""
    run_dir = tmp_path_factory.mktemp("network") / "cnn"
    result = run_cli(NETWORK, run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def uses(network: Path, *more: str) -> list[str]:
    return [*DATA, "features=network", f"features.network.checkpoint={network}", *more]


def activations_computed_directly(network: Path, images: torch.Tensor) -> torch.Tensor:
    """The CNN's input to its last Linear layer, with the weights and normalization its run had, by hand."""
    state = torch.load(network / "best.pt", weights_only=True)
    model = CNN((1, 28, 28), 10, channels=(8, 16), hidden=(32,))
    model.load_state_dict(state["model"])
    model.eval()
    train, _ = holdout_indices(300, 0.1, 0)  # the network run's train part
    mean, std = channel_stats(Synthetic(train_size=300, test_size=100).load().train.images[train])
    assert state["inputs"] == {"shape": [1, 28, 28], "mean": mean.tolist(), "std": std.tolist(), "classes": CLASSES}
    x = images.float() * (1.0 / (255.0 * std)).view(1, -1, 1, 1) + (-mean / std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model.classifier[:-1](model.features(x))


CLASSES = list(SHAPES)


def cached_train_features(cache: Path) -> list[Path]:
    return sorted(cache.glob("synthetic-train-*.pt"), key=lambda p: p.stat().st_mtime)


def test_the_features_are_the_layers_activations_cached_until_the_network_changes(network, tmp_path):
    cache = tmp_path / "cache"
    args = uses(network, "model=knn", "logging=none", f"features.cache_dir={cache}")
    first = run_cli(args, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    log = (tmp_path / "first" / "train.log").read_text()
    assert f"features: 32 numbers per image (network activations (CNN of {network / 'best.pt'}, the input of" in log
    (stored,) = cached_train_features(cache)
    images = Synthetic(train_size=300, test_size=100).load().train.images
    expected = activations_computed_directly(network, images)
    torch.testing.assert_close(torch.load(stored, weights_only=True)["features"], expected, rtol=1e-5, atol=1e-5)

    second = run_cli(args, tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert "features: Synthetic train loaded from" in (tmp_path / "second" / "train.log").read_text()
    assert read_metrics(tmp_path / "second")["test/acc"] == read_metrics(tmp_path / "first")["test/acc"]

    # the network trained again into the same file: same name, same layer, other weights
    state = torch.load(network / "best.pt", weights_only=True)
    state["model"]["classifier.1.weight"] = state["model"]["classifier.1.weight"] * 2
    retrained = tmp_path / "retrained.pt"
    torch.save(state, retrained)
    third = run_cli([*args, f"features.network.checkpoint={retrained}"], tmp_path / "third")
    assert third.returncode == 0, third.stderr
    assert "features: Synthetic train (300 images) computed" in (tmp_path / "third" / "train.log").read_text()
    assert len(cached_train_features(cache)) == 2
    # the key follows the content, not the name: the first network's bytes under the retrained one's name
    retrained.write_bytes((network / "best.pt").read_bytes())
    assert NetworkFeatures(checkpoint=str(retrained)).sha256 == NetworkFeatures(checkpoint=str(network)).sha256


def test_a_named_layer_gives_its_output_and_other_images_are_made_to_fit(network):
    images = Synthetic(train_size=20, test_size=1).load().train.images
    conv = NetworkFeatures(checkpoint=str(network), layer="features.3")  # the first stage: conv, BN, pool, ReLU
    state = torch.load(network / "best.pt", weights_only=True)
    model = CNN((1, 28, 28), 10, channels=(8, 16), hidden=(32,))
    model.load_state_dict(state["model"])
    model.eval()
    mean, std = torch.tensor(state["inputs"]["mean"]), torch.tensor(state["inputs"]["std"])
    x = images.float() * (1.0 / (255.0 * std)).view(1, -1, 1, 1) + (-mean / std).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(conv(images), model.features[:4](x).flatten(1))
    assert conv.size((1, 28, 28)) == 8 * 14 * 14

    # colour 32x32 images into the grey 28x28 network: Pillow's grey, then a bilinear resize
    colour = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    grey = [Image.fromarray(image.permute(1, 2, 0).numpy()).convert("L") for image in colour]
    assert torch.equal(fitted(colour, (1, 32, 32)), torch.from_numpy(np.stack(grey)).float().unsqueeze(1))
    resized = np.stack([np.asarray(g.resize((28, 28), Image.BILINEAR)) for g in grey])
    assert (fitted(colour, (1, 28, 28)).squeeze(1) - torch.from_numpy(resized).float()).abs().max() <= 2
    assert "colour turned grey and resized from 32x32 to 28x28" in conv.describe((3, 32, 32))
    assert conv(colour).shape == (4, 8 * 14 * 14)


@pytest.fixture(scope="module")
def knn_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("knn") / "run"
    result = run_cli([*DATA, "model=knn", "logging=none"], run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def one_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "error: " in lines[0] and "Traceback" not in result.stdout, result.stderr
    return lines[0]


def test_bad_values_are_one_line_naming_the_value_and_what_would_do(network, knn_run, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    cases = {
        "missing": ([*DATA, "features=network", "model=knn"], "features.network.checkpoint=RUN_DIR"),
        "absent": (uses(tmp_path / "nowhere", "model=knn"), f"checkpoint={tmp_path / 'nowhere'} does not exist"),
        "junk": (uses(junk, "model=knn"), "not a visionlab checkpoint"),
        "knn": (uses(knn_run, "model=knn"), "is a KNN run's, which memorizes its training images"),
        "layer": (uses(network, "model=knn", "features.network.layer=nope"), "features.network.layer=nope is not a"),
        "cnn": (uses(network, "model=cnn"), "model._target_=visionlab.models.cnn.CNN takes images"),
    }
    lines = {name: one_line(run_cli(args, tmp_path / name)) for name, (args, _) in cases.items()}
    for name, (_, says) in cases.items():
        assert says in lines[name], (name, lines[name])
    assert "use one of features, features.0," in lines["layer"] and "null for the penultimate" in lines["layer"]
    assert "give a vl-train run folder" in lines["absent"] and "give a vl-train run folder" in lines["junk"]


class WritesOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_crafted_checkpoint_is_refused_and_runs_nothing(network, tmp_path):
    marker = tmp_path / "written"
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": WritesOnLoad(marker), "config": {}}, pickled)
    line = one_line(run_cli(uses(pickled, "model=knn"), tmp_path / "pickled"))
    assert f"checkpoint={pickled} is not a network" in line and "corrupt or not a visionlab checkpoint" in line

    state = torch.load(network / "best.pt", weights_only=True)
    state["config"]["model"] = {"_target_": "pathlib.Path.write_text", "_args_": [str(marker), "built"]}
    targeted = tmp_path / "targeted.pt"
    torch.save(state, targeted)
    line = one_line(run_cli(uses(targeted, "model=knn"), tmp_path / "targeted"))
    assert f"{targeted}: model._target_=pathlib.Path.write_text is not a component" in line
    assert "nothing was imported" in line

    state["config"]["model"] = {"_target_": "visionlab.models.cnn.CNN", "channels": "${oc.env:HOME}"}
    resolving = tmp_path / "resolving.pt"
    torch.save(state, resolving)
    assert "calls the resolver oc.env" in one_line(run_cli(uses(resolving, "model=knn"), tmp_path / "resolving"))
    assert not marker.exists()


def test_vl_eval_vl_predict_and_a_resumed_run_on_network_features(network, tmp_path, monkeypatch):
    """A linear model with the default pictures, scored again and asked about new images; stopped mid-epoch and
    resumed, it ends as if never stopped."""
    args = uses(network, "model=linear", "trainer.epochs=2", "trainer.batch_size=16", f"features.cache_dir={tmp_path}")
    run = visionlab.train(*args, f"hydra.run.dir={tmp_path / 'run'}")
    assert run.metrics["status"] == "completed"
    events = EventAccumulator(str(run.folder), size_guidance={"images": 0})
    events.Reload()
    assert "features/network_activations" in events.Tags()["images"]

    assert visionlab.evaluate(run)["test/acc"] == run.metrics["test/acc"]
    bar = torch.zeros(1, 28, 28)
    bar[:, :, 10:18] = 1.0
    (row,) = visionlab.predict(run, bar, top_k=3)
    assert len(row["top"]) == 3

    from visionlab.training.callbacks import SaveAndStop

    after_step = SaveAndStop.after_step

    def stop_at_step_20(self, state, loss, images):  # epoch 2's third step: 17 steps an epoch
        if state.at.step == 20:
            self.stop.signum = signal.SIGINT
        after_step(self, state, loss, images)

    monkeypatch.setattr(SaveAndStop, "after_step", stop_at_step_20)
    with pytest.raises(KeyboardInterrupt, match="last.pt saved"):
        visionlab.train(*args, "logging=none", f"hydra.run.dir={tmp_path / 'stopped'}")
    position = torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["position"]
    assert position["epoch"] == 2 and position["batch"] > 0
    monkeypatch.setattr(SaveAndStop, "after_step", after_step)
    resumed = visionlab.train(f"resume={tmp_path / 'stopped'}")
    alone = visionlab.train(*args, "logging=none", f"hydra.run.dir={tmp_path / 'alone'}")
    assert without_timing(resumed.metrics) == without_timing(alone.metrics)


def test_a_checkpoint_from_before_inputs_were_recorded_measures_its_own_data_again(network, tmp_path):
    state = torch.load(network / "best.pt", weights_only=True)
    del state["inputs"]
    older = tmp_path / "older.pt"
    torch.save(state, older)
    images = Synthetic(train_size=20, test_size=1).load().train.images
    now, then = NetworkFeatures(checkpoint=str(network)), NetworkFeatures(checkpoint=str(older))
    assert then.normalization == now.normalization
    assert torch.equal(then(images), now(images))
