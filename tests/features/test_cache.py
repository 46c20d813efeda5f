"""The feature cache: a second run reads what the first computed;
anything that changes the features changes the file."""

from __future__ import annotations

import logging

import pytest
import torch

from visionlab.features import Features
from visionlab.features.color import ColorHistogram
from visionlab.features.hog import HOG

SIZE = HOG(cell_size=4).size((3, 16, 16)) + 6  # the HOG and colour numbers per image of hog_features()


def images(seed: int = 0, n: int = 20) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


class Counted(Features):
    """Features that count how often they really compute, theirs and their fitted copies' (make_splits fits a copy:
    the run's own Features stays as built)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extractions: list[int] = []  # one entry per extraction, shared with the copies

    @property
    def computed(self) -> int:
        return len(self.extractions)

    def extract(self, images, device):
        self.extractions.append(len(images))
        return super().extract(images, device)


def hog_features(cache_dir, **params) -> Counted:
    return Counted(cache_dir=str(cache_dir), hog=HOG(cell_size=4, **params), color=ColorHistogram(bins=6))


def test_a_second_run_reads_the_cache_instead_of_computing(tmp_path):
    first = hog_features(tmp_path)
    computed = first.cached(images(), "Synthetic", "train", torch.device("cpu"))
    second = hog_features(tmp_path)  # a new run: a new object with the same parameters
    loaded = second.cached(images(), "Synthetic", "train", torch.device("cpu"))
    assert (first.computed, second.computed) == (1, 0)
    assert torch.equal(loaded, computed) and loaded.shape == (20, SIZE)
    (path,) = (tmp_path).glob("*.pt")
    assert path.name.startswith("synthetic-train-")


@pytest.mark.parametrize("change", ["parameters", "images", "number of images", "split", "dataset"])
def test_anything_that_changes_the_features_changes_the_file(tmp_path, change):
    cpu = torch.device("cpu")
    hog_features(tmp_path).cached(images(), "Synthetic", "train", cpu)
    altered = images()
    altered[3, 0, 5, 5] ^= 1  # a single pixel differs
    features = hog_features(tmp_path, bins=12) if change == "parameters" else hog_features(tmp_path)
    args = {
        "parameters": (images(), "Synthetic", "train"),
        "images": (altered, "Synthetic", "train"),
        "number of images": (images()[:19], "Synthetic", "train"),
        "split": (images(), "Synthetic", "test"),
        "dataset": (images(), "MNIST", "train"),
    }[change]
    result = features.cached(*args, cpu)
    assert features.computed == 1, f"a changed {change} must not read the old file"
    assert torch.equal(result, features.extract(args[0], cpu))
    assert len(list(tmp_path.glob("*.pt"))) == 2  # the old file stays for runs that still match it


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other data", "empty"])
def test_a_corrupt_file_is_recomputed_with_a_warning(tmp_path, caplog, damage):
    cpu = torch.device("cpu")
    expected = hog_features(tmp_path).cached(images(), "Synthetic", "train", cpu)
    (path,) = tmp_path.glob("*.pt")
    content = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(b"not a tensor file" * 10)
    elif damage == "truncated":
        path.write_bytes(content[: len(content) // 2])
    elif damage == "other data":
        torch.save({"key": "{}", "features": torch.zeros(20, SIZE)}, path)
    else:
        path.write_bytes(b"")
    features = hog_features(tmp_path)
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        result = features.cached(images(), "Synthetic", "train", cpu)
    assert features.computed == 1 and torch.equal(result, expected)
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and "computing the features again" in warning.getMessage()
    again = hog_features(tmp_path)  # the file was rewritten: the next run reads it
    assert torch.equal(again.cached(images(), "Synthetic", "train", cpu), expected) and again.computed == 0


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    features = hog_features(blocker / "cache")
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        result = features.cached(images(), "Synthetic", "train", torch.device("cpu"))
    assert result.shape == (20, SIZE)
    assert any("could not write" in r.getMessage() for r in caplog.records)


def test_no_cache_dir_means_no_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    features = Counted(cache_dir=None, hog=HOG(cell_size=4))
    features.cached(images(), "Synthetic", "train", torch.device("cpu"))
    features.cached(images(), "Synthetic", "train", torch.device("cpu"))
    assert features.computed == 2 and not list(tmp_path.rglob("*.pt"))
