"""Datasets load as uint8 tensors of the documented shapes; splits follow the train/val/test rules."""

from __future__ import annotations

import urllib.error

import pytest
import torch

from tests.conftest import config_error
from visionlab.data import holdout_indices, make_splits
from visionlab.data.cifar10 import CIFAR10
from visionlab.data.files import ensure_files
from visionlab.data.mnist import FILES as MNIST_FILES
from visionlab.data.mnist import MNIST
from visionlab.data.splits import channel_stats
from visionlab.data.synthetic import Synthetic
from visionlab.errors import UserError


def test_synthetic_is_seeded_and_shaped():
    a, b = (
        Synthetic(shape=[3, 16, 16], train_size=50, test_size=20, seed=3).load(),
        Synthetic(shape=[3, 16, 16], train_size=50, test_size=20, seed=3).load(),
    )
    assert a.train.images.shape == (50, 3, 16, 16) and a.train.images.dtype == torch.uint8
    assert a.test.images.shape == (20, 3, 16, 16)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    other = Synthetic(shape=[3, 16, 16], train_size=50, test_size=20, seed=4).load()
    assert not torch.equal(a.train.images, other.train.images)
    assert set(a.train.labels.tolist()) <= set(range(10)) and len(a.classes) == 10


def test_holdout_is_a_seeded_partition():
    train, val = holdout_indices(1000, 0.1, seed=0)
    assert len(val) == 100 and len(train) == 900
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(train.tolist() + val.tolist()) == list(range(1000))
    assert torch.equal(val, holdout_indices(1000, 0.1, seed=0)[1])
    assert not torch.equal(val, holdout_indices(1000, 0.1, seed=1)[1])


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.0001])
def test_holdout_rejects_empty_parts(fraction):
    with pytest.raises(UserError, match="val_fraction"):
        holdout_indices(100, fraction, seed=0)


def test_normalization_comes_from_train_only():
    raw = Synthetic(train_size=200, test_size=50).load()
    raw.test.images.fill_(255)  # a test set this different must not move the statistics
    train_index, val_index = holdout_indices(200, 0.25, seed=0)
    splits = make_splits(raw, train_index, val_index, torch.device("cpu"))
    mean, std = channel_stats(raw.train.images[train_index])
    assert torch.allclose(splits.mean, mean) and torch.allclose(splits.std, std)
    images, _ = splits.train.batch(torch.arange(len(splits.train)))
    assert abs(images.mean().item()) < 1e-4 and abs(images.std().item() - 1) < 1e-2
    assert splits.in_shape == (1, 28, 28) and splits.num_classes == 10


def test_channel_stats_match_a_direct_computation():
    images = torch.randint(0, 256, (1000, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images, chunk=128)
    x = images.double() / 255
    assert torch.allclose(mean.double(), x.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), x.permute(1, 0, 2, 3).reshape(3, -1).std(1, unbiased=False), atol=1e-6)


def test_subset_sizes_are_checked():
    assert "dataset.train_size=0 is invalid: use a whole number of at least 1" in config_error(["dataset.train_size=0"])


def test_failed_download_is_one_line_naming_folder_and_files(tmp_path):
    def offline():
        raise urllib.error.URLError("Name or service not known")

    with pytest.raises(UserError) as err:
        ensure_files("MNIST", tmp_path / "MNIST" / "raw", ["a-file", "b-file"], True, offline)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "MNIST" / "raw") in message
    assert "a-file, b-file" in message and "download failed (URLError" in message


def test_mnist_reads_the_standard_idx_files(shared_data):
    raw = MNIST(root=str(shared_data), download=False).load()
    assert raw.train.images.shape == (60000, 1, 28, 28) and raw.test.images.shape == (10000, 1, 28, 28)
    assert raw.train.images.dtype == torch.uint8 and raw.classes == [str(i) for i in range(10)]
    assert torch.bincount(raw.test.labels).tolist()[:3] == [980, 1135, 1032]  # the official test set


def test_mnist_idx_reader_gives_torchvisions_arrays(shared_data):
    import torchvision

    raw = MNIST(root=str(shared_data), download=False).read()
    for part, train in ((raw.train, True), (raw.test, False)):
        reference = torchvision.datasets.MNIST(str(shared_data), train=train, download=False)
        assert torch.equal(part.images[:, 0], reference.data) and torch.equal(part.labels, reference.targets)


def test_truncated_mnist_file_is_a_clear_error(tmp_path, shared_data):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_FILES:
        (raw / name).write_bytes((shared_data / "MNIST" / "raw" / name).read_bytes()[:5000])
    with pytest.raises(
        UserError, match="train-images-idx3-ubyte does not hold the 47,040,000 bytes its header announces"
    ):
        MNIST(root=str(tmp_path), download=False).load()


def test_cifar10_reads_a_rebuilt_copy_without_checksums(cifar_root):
    raw = CIFAR10(root=str(cifar_root), download=False, train_size=1000).load()
    assert raw.train.images.shape == (1000, 3, 32, 32) and raw.test.images.shape == (10000, 3, 32, 32)
    assert raw.classes[0] == "airplane" and torch.bincount(raw.test.labels).tolist() == [1000] * 10


def test_corrupt_cifar_file_is_a_clear_error(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="data_batch_1 is corrupt"):
        CIFAR10(root=str(tmp_path), download=False).load()
