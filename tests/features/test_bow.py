"""The bag of visual words: k-means against scikit-learn's, whitening, the encodings,
pooling, what it is fitted on, its cache."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY, compose_train, config_error, read_metrics, run_cli
from tests.features.test_cache import Counted
from visionlab.data import LabeledImages, RawData
from visionlab.errors import UserError
from visionlab.features import Features
from visionlab.features.bow import BagOfWords
from visionlab.features.kmeans import kmeans
from visionlab.reporting.codebook import codebook_picture, word_patches
from visionlab.reporting.feature_pictures import feature_pictures

sklearn_cluster = pytest.importorskip(
    "sklearn.cluster", reason="scikit-learn is in the test extra: pip install -e '.[test]'"
)

CPU = torch.device("cpu")
SMALL = dict(patch_size=4, words=8, sample=2000)  # a codebook learned in milliseconds from 16x16 images


def smooth_images(n: int = 60, channels: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    """8-bit images of blobs: neighbouring pixels are correlated, as in photographs, so whitening has work to do."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, size // 4, size // 4, generator=g)
    return (
        (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    )


def fitted(images: torch.Tensor | None = None, **params) -> BagOfWords:
    return BagOfWords(**{**SMALL, **params}).fit(smooth_images() if images is None else images, CPU)


def points(kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    if kind == "uniform":  # no clusters at all: many local optima of nearly the same inertia
        return torch.rand(3000, 8, generator=g)
    centres = torch.randn(10, 8, generator=g) * 5  # 10 well separated blobs: a bad start is stuck far above the best
    return centres[torch.randint(10, (3000,), generator=g)] + torch.randn(3000, 8, generator=g)


@pytest.mark.parametrize("kind,k", [("uniform", 10), ("uniform", 50), ("blobs", 10), ("blobs", 50)])
def test_kmeans_inertia_is_within_1_percent_of_scikit_learn(kind, k):
    x = points(kind)
    ours = kmeans(x, k, iterations=100, seed=0, init="k-means++")
    theirs = sklearn_cluster.KMeans(k, n_init=1, random_state=0).fit(x.double().numpy())
    assert ours.centres.shape == (k, 8) and ours.counts.sum() == len(x)
    assert abs(ours.inertia / theirs.inertia_ - 1) < 0.01, (ours.inertia, theirs.inertia_)
    assert ours.inertia == pytest.approx(
        ((x - ours.centres[torch.cdist(x, ours.centres).argmin(1)]) ** 2).sum().item(), rel=1e-4
    )


def test_kmeans_refills_empty_clusters_and_is_seeded():
    distinct = torch.tensor([[0.0, 0], [10, 0], [0, 10], [10, 10], [5, 20]])
    x = distinct.repeat(20, 1)  # 100 points on 5 spots: random starts pick the same spot twice, leaving clusters empty
    result = kmeans(x, 5, iterations=50, seed=3, init="random")
    assert result.inertia == 0 and sorted(result.counts.tolist()) == [20] * 5
    assert torch.equal(kmeans(x, 5, seed=3, init="random").centres, result.centres)


def test_whitening_gives_identity_covariance_on_the_training_patches():
    bow = fitted(whiten_eps=1e-8, sample=5000)
    x = (bow.normalized(bow.sample_patches(smooth_images())) - bow.mean) @ bow.whitening
    d = x.shape[1]
    # Identity on every direction but the constant patch, which each patch's own normalization has already removed.
    expected = torch.eye(d) - torch.full((d, d), 1 / d)
    torch.testing.assert_close(torch.cov(x.T.double(), correction=0), expected.double(), atol=0.02, rtol=0)
    raw = torch.cov(bow.normalized(bow.sample_patches(smooth_images())).T.double())
    assert (raw - expected).abs().max() > 0.5, "the patches themselves are far from white"
    torch.testing.assert_close(bow.whitening @ bow.unwhitening, torch.eye(d), atol=1e-3, rtol=0)


def reference_distances(bow: BagOfWords, images: torch.Tensor) -> torch.Tensor:
    """Each patch's Euclidean distance to each word `[N, P, words]`, by torch.cdist."""
    patches = F.unfold(images.float(), bow.patch_size, stride=bow.stride).transpose(1, 2)
    x = (bow.normalized(patches) - bow.mean) @ bow.whitening
    return torch.cdist(x.double(), bow.codebook.double().unsqueeze(0).expand(len(x), -1, -1))


def test_triangle_codes_are_mean_distance_minus_distance_and_zero_for_far_words():
    bow = fitted()
    images = smooth_images(5, seed=1)
    codes = bow.patch_codes(images)
    distance = reference_distances(bow, images)
    mean = distance.mean(-1, keepdim=True)
    assert codes.shape == (5, 13 * 13, 8) and codes.min() >= 0
    far = distance >= mean
    assert (codes[far] == 0).all() and 0 < far.double().mean() < 1
    torch.testing.assert_close(codes.double(), (mean - distance).clamp_min(0), atol=1e-3, rtol=1e-4)


def test_hard_codes_are_one_for_the_nearest_word():
    bow = fitted(encoding="hard")
    images = smooth_images(5, seed=1)
    codes = bow.patch_codes(images)
    nearest = reference_distances(bow, images).argmin(-1)
    assert torch.equal(codes, F.one_hot(nearest, 8).float())


@pytest.mark.parametrize("encoding", ["triangle", "hard"])
def test_codes_are_summed_per_region_of_the_pool_grid(encoding):
    images = smooth_images(7, seed=2)
    # 7x7 patch positions: regions of 4 and 3 rows and columns
    quadrants = fitted(encoding=encoding, pool_grid=2, stride=2)
    whole = fitted(encoding=encoding, pool_grid=1, stride=2)  # the same codebook: pooling plays no part in learning it
    pooled = quadrants(images)
    assert pooled.shape == (7, 8 * 4) == (7, quadrants.size((3, 16, 16)))
    codes = quadrants.patch_codes(images).view(7, 7, 7, 8)
    # top right: rows 0-3, columns 4-6
    torch.testing.assert_close(pooled.view(7, 4, 8)[:, 1], codes[:, :4, 4:].sum((1, 2)))
    torch.testing.assert_close(whole(images), pooled.view(7, 4, 8).sum(1))
    if encoding == "hard":
        assert (pooled.view(7, 4, 8).sum(2) == torch.tensor([16.0, 12, 12, 9])).all()  # every patch counts once


def test_encoding_is_batched_and_independent_of_the_step(monkeypatch):
    bow = fitted()
    images = smooth_images(9, seed=3)
    everything = bow(images)
    monkeypatch.setattr("visionlab.features.bow.SCRATCH", 1)  # one image per step
    torch.testing.assert_close(bow(images), everything)


def raw_data(n_train: int = 40, n_test: int = 10) -> RawData:
    images = smooth_images(n_train + n_test, seed=4)
    labels = torch.arange(n_train + n_test) % 4
    return RawData(
        LabeledImages(images[:n_train], labels[:n_train]),
        LabeledImages(images[n_train:], labels[n_train:]),
        list("abcd"),
    )


def train_rows(raw: RawData, train_index: torch.Tensor, val_index: torch.Tensor) -> torch.Tensor:
    splits = Features(bow=BagOfWords(**SMALL)).make_splits(raw, train_index, val_index, CPU, "Synthetic")
    return splits.train.batch(torch.arange(len(train_index)))[0]


def test_the_codebook_is_fitted_on_the_train_part_only():
    raw = raw_data()
    train_index, val_index = torch.arange(10, 40), torch.arange(10)
    before = train_rows(raw, train_index, val_index)
    raw.train.images[val_index] = 255 - raw.train.images[val_index]  # other val and test images
    raw.test.images.copy_(smooth_images(10, seed=5))
    assert torch.equal(train_rows(raw, train_index, val_index), before)
    raw.train.images[train_index[:1]] = 255 - raw.train.images[train_index[:1]]  # one training image differs
    assert not torch.equal(train_rows(raw, train_index, val_index), before)


CHANGES = {
    "patch_size": 5,
    "stride": 2,
    "words": 6,
    "encoding": "hard",
    "pool_grid": 1,
    "whiten": False,
    "whiten_eps": 0.2,
    "sample": 1500,
    "iterations": 5,
    "init": "k-means++",
    "seed": 1,
}


def test_every_parameter_is_checked_for_a_cache_change():
    assert set(CHANGES) == {f.name for f in dataclasses.fields(BagOfWords)} - {"fitted_on"}


@pytest.mark.parametrize("change", [*CHANGES, "train part"])
def test_anything_that_changes_the_features_changes_the_cache(tmp_path, change, caplog):
    raw = raw_data()
    train_index, val_index = torch.arange(10, 40), torch.arange(10)

    def run(index: torch.Tensor = train_index, **params) -> Counted:
        features = Counted(cache_dir=str(tmp_path), bow=BagOfWords(**{**SMALL, **params}))
        with caplog.at_level(logging.INFO, logger="visionlab"):
            features.make_splits(raw, index, val_index, CPU, "Synthetic")
        return features

    assert run().computed == 2
    caplog.clear()
    assert run().computed == 0 and "codebook of" not in caplog.text, (
        "the same parameters read both the features and the codebook"
    )
    changed = run(torch.arange(11, 40)) if change == "train part" else run(**{change: CHANGES[change]})
    assert changed.computed == 2 and "codebook of" in caplog.text
    assert len(list(tmp_path.glob("bow-codebook-*.pt"))) == 2 and len(list(tmp_path.glob("synthetic-train-*.pt"))) == 2


def test_the_codebook_picture_shows_the_most_frequent_words_as_patches():
    bow = fitted(whiten_eps=1e-3)
    patches = word_patches(bow)
    assert patches.shape == (8, 3, 4, 4)
    # A word de-whitened is a normalized patch again: whitening it anew gives the word back.
    torch.testing.assert_close((patches.flatten(1) - bow.mean) @ bow.whitening, bow.codebook, atol=1e-3, rtol=1e-3)
    picture = codebook_picture(bow, shown=5)
    assert picture.dtype == torch.uint8 and picture.shape[0] == 3 and picture.shape[2] > 5 * 4 * 21
    assert set(feature_pictures(Features(bow=bow, other=bow), torch.zeros(1, 3, 8, 8, dtype=torch.uint8))) == {
        "features/bow_codebook",
        "features/other_codebook",
    }
    # not fitted yet: nothing to draw
    assert feature_pictures(Features(bow=BagOfWords(**SMALL)), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)) == {}


def test_bad_parameters_are_one_line_errors():
    assert "features.bow.encoding='soft' is unknown: use one of triangle, hard" in config_error(
        ["features=bow", "model=linear", "features.bow.encoding=soft"]
    )
    assert config_error(["features=bow", "model=linear", "features.bow.words=0"]).startswith(
        "features.bow.words=0 is invalid"
    )
    with pytest.raises(UserError, match=r"features.bow.patch_size=20 is larger than the images \(16x16\)"):
        BagOfWords(patch_size=20).size((3, 16, 16))
    with pytest.raises(UserError, match=r"features.bow.words=3000 needs at least as many patches"):
        fitted(words=3000)
    combined = compose_train(["features=hog+color+bow"]).features
    assert {"hog", "color", "bow"} <= set(combined) and combined.bow.words == 1600


def test_cli_run_on_a_bag_of_words_writes_metrics(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    small = ["features.bow.words=32", "features.bow.sample=5000", "features.bow.stride=2"]
    result = run_cli(
        [
            "dataset=synthetic",
            "dataset.noise=0.1",
            "features=bow",
            "model=linear",
            *TINY,
            *small,
            f"features.cache_dir={cache}",
        ],
        run_dir,
    )
    assert result.returncode == 0, result.stderr
    metrics = read_metrics(run_dir)
    # chance: 0.1
    assert metrics["status"] == "completed" and 0 <= metrics["test/acc"] <= 1 and metrics["val/acc"] > 0.2
    log = (run_dir / "train.log").read_text()
    assert "features: 128 numbers per image (bag of 32 words (12x12 patches of 6x6 pixels every 2" in log
    assert sorted(p.name.split("-")[1] for p in cache.glob("*.pt")) == ["codebook", "test", "train"]
