"""Features in a run: standardized with train statistics only, cached across seeds, usable by vector models only."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, compose_train, read_metrics, run_cli
from tests.features.test_cache import Counted
from visionlab.data import LabeledImages, RawData
from visionlab.data.augment import Augment
from visionlab.errors import UserError
from visionlab.experiment import run
from visionlab.features import Features, FeatureSplits
from visionlab.features.hog import HOG

# Colour images with little noise: HOG sees the templates' edges, so features=hog learns something in 2 epochs.
COLOUR = ["dataset.shape=[3,32,32]", "dataset.noise=0.1"]


def raw_data(n_train: int = 40, n_test: int = 10) -> RawData:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n_train + n_test, 3, 16, 16), generator=g, dtype=torch.uint8)
    labels = torch.arange(n_train + n_test) % 4
    return RawData(
        LabeledImages(images[:n_train], labels[:n_train]),
        LabeledImages(images[n_train:], labels[n_train:]),
        list("abcd"),
    )


def test_splits_are_standardized_with_the_train_part_only(tmp_path):
    raw = raw_data()
    train_index, val_index = torch.arange(10, 40), torch.arange(10)
    features = Features(cache_dir=str(tmp_path), hog=HOG(cell_size=4))
    splits = features.make_splits(raw, train_index, val_index, torch.device("cpu"), "Synthetic")
    assert isinstance(splits, FeatureSplits) and splits.in_shape == (HOG(cell_size=4).size((3, 16, 16)),)
    train, _ = splits.train.batch(torch.arange(30))
    torch.testing.assert_close(train.mean(0), torch.zeros(train.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.std(0, correction=0), torch.ones(train.shape[1]), atol=1e-4, rtol=0)
    # val and test use train's mean and std, not their own
    everything = features.extract(raw.train.images, torch.device("cpu"))
    val, labels = splits.val.batch(torch.arange(10))
    torch.testing.assert_close(val, (everything[:10] - splits.mean) / splits.std)
    assert torch.equal(labels, raw.train.labels[:10])
    assert len(splits.test) == 10 and splits.examples.shape == (8, 3, 16, 16)


def test_the_cache_does_not_depend_on_the_train_val_partition(tmp_path):
    raw = raw_data()
    computed = []
    for seed in (0, 1):
        features = Counted(cache_dir=str(tmp_path), hog=HOG(cell_size=4))
        order = torch.randperm(40, generator=torch.Generator().manual_seed(seed))
        features.make_splits(raw, order[8:].sort().values, order[:8].sort().values, torch.device("cpu"), "Synthetic")
        computed.append(features.computed)
    assert computed == [2, 0], "the second seed reads the train and test features the first one cached"


def test_features_turn_augmentation_off_and_raw_pixels_keep_it():
    cifar_like = Augment(crop_padding=4, flip=True)
    assert Features(hog=HOG()).augment(cifar_like) == Augment()
    assert Features().augment(cifar_like) is cifar_like


@pytest.mark.parametrize("model", ["cnn", "lenet5", "resnet_small"])
def test_a_model_that_needs_images_is_refused_before_data_loads(model):
    cfg = compose_train(["features=hog", f"model={model}"])
    with pytest.raises(
        UserError,
        match=r"model._target_=visionlab.models.\w+.\w+ takes images.*use model=linear, model=mlp or model=knn",
    ):
        Features(hog=HOG()).check_model(cfg.model)


def test_knn_and_mlp_run_on_features(tmp_path):
    for model in ("knn", "mlp"):
        cfg = compose_train(
            [*TINY, *COLOUR, "features=hog", f"features.cache_dir={tmp_path / 'cache'}", f"model={model}"]
        )
        metrics = run(cfg, tmp_path / model)
        assert metrics["status"] == "completed" and metrics["val/acc"] > 0.2, (model, metrics)  # chance: 0.1


def test_cli_run_on_features_writes_metrics_the_hog_picture_and_the_cache(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    result = run_cli(
        ["features=hog+color", "model=linear", "loss=hinge", *TINY, *COLOUR, f"features.cache_dir={cache}"], run_dir
    )
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed" and metrics["val/acc"] > 0.25 and metrics["test/acc"] > 0.25
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.pt")) == ["test", "train"]
    log = (run_dir / "train.log").read_text()
    assert "features: 334 numbers per image" in log and "4x4 cells of 8x8 pixels" in log
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    images = set(events.Tags()["images"])
    assert "features/hog_cells" in images and "data/train_preview" not in images and "val/mistakes" not in images


def test_cli_cnn_with_features_exits_2_with_one_line(tmp_path):
    result = run_cli(["features=hog+color", "model=cnn", *TINY], tmp_path / "run")
    assert result.returncode == 2, result.stdout + result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "model._target_=visionlab.models.cnn.CNN takes images" in line and "features=none" in line
    assert "Traceback" not in result.stdout + result.stderr
