"""Fashion-MNIST and CIFAR-100, read from small files written here in their standard formats."""

from __future__ import annotations

import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import VL_TRAIN, run_cli
from tests.data.test_folder import FAST
from visionlab.data.cifar100 import CIFAR100
from visionlab.data.fashion_mnist import FashionMNIST
from visionlab.data.mnist import FILES


def write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of unsigned bytes: 0x00 0x00 0x08 <dims>, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_idx_dataset(folder: Path, train: int, test: int, seed: int = 0) -> dict[str, np.ndarray]:
    """MNIST's four files (as Fashion-MNIST ships them): 28x28 images whose brightness says the class."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {}
    for (images, labels), n in zip((FILES[:2], FILES[2:]), (train, test)):
        y = np.arange(n) % 10
        x = (y[:, None, None] * 25 + rng.integers(0, 6, (n, 28, 28))).astype(np.uint8)
        write_idx(folder / images, x)
        write_idx(folder / labels, y)
        arrays[images], arrays[labels] = x, y
    return arrays


def test_fashion_mnist_reads_its_idx_files_with_its_class_names(tmp_path):
    arrays = write_idx_dataset(tmp_path / "FashionMNIST" / "raw", train=50, test=20)
    raw = FashionMNIST(root=str(tmp_path), download=False).load()
    assert raw.train.images.shape == (50, 1, 28, 28) and raw.test.images.shape == (20, 1, 28, 28)
    assert torch.equal(raw.train.images[:, 0], torch.from_numpy(arrays[FILES[0]]))
    assert torch.equal(raw.test.labels, torch.from_numpy(arrays[FILES[3]]).long())
    assert raw.classes[0] == "T-shirt/top" and raw.classes[9] == "Ankle boot"


def write_cifar100(root: Path, train: int, test: int) -> dict[str, dict]:
    """`cifar-100-python/{train,test,meta}` as the official archive has them (pickled dicts, bytes as N x 3072)."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for name, n in (("train", train), ("test", test)):
        fine = np.arange(n) % 100
        batch = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            "fine_labels": fine.tolist(),
            "coarse_labels": (fine // 5).tolist(),
            "filenames": [f"{i}.png" for i in range(n)],
        }
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
        written[name] = batch
    meta = {
        "fine_label_names": [f"fine_{i}" for i in range(100)],
        "coarse_label_names": [f"coarse_{i}" for i in range(20)],
    }
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    return written


def test_cifar100_reads_fine_and_coarse_labels_with_their_names(tmp_path):
    written = write_cifar100(tmp_path, train=200, test=100)
    fine = CIFAR100(root=str(tmp_path), download=False).load()
    assert fine.train.images.shape == (200, 3, 32, 32) and len(fine.classes) == 100 and fine.classes[7] == "fine_7"
    assert torch.equal(fine.train.images.flatten(1), torch.from_numpy(written["train"]["data"]))
    assert fine.test.labels.tolist() == written["test"]["fine_labels"]
    coarse = CIFAR100(root=str(tmp_path), download=False, label_type="coarse").load()
    assert len(coarse.classes) == 20 and coarse.test.labels.tolist() == written["test"]["coarse_labels"]


def test_cifar100_coarse_labels_train_through_the_cli(tmp_path):
    write_cifar100(tmp_path / "data", train=200, test=100)
    run_dir = tmp_path / "run"
    result = run_cli(
        [
            "dataset=cifar100",
            f"dataset.root={tmp_path / 'data'}",
            "dataset.download=false",
            "dataset.label_type=coarse",
            *FAST,
        ],
        run_dir,
    )
    assert result.returncode == 0, result.stderr
    assert "180 train / 20 val / 100 test images of shape 3x32x32, 20 classes" in (run_dir / "train.log").read_text()


CASES = [
    (
        "fashion-missing",
        ["dataset=fashion_mnist", "dataset.root={empty}", "dataset.download=false"],
        ["FashionMNIST not found", "train-images-idx3-ubyte"],
    ),
    (
        "cifar100-missing",
        ["dataset=cifar100", "dataset.root={empty}", "dataset.download=false"],
        ["CIFAR-100 not found", "train, test, meta"],
    ),
    (
        "cifar100-label-type",
        ["dataset=cifar100", "dataset.label_type=medium"],
        ["dataset.label_type='medium'", "fine", "coarse"],
    ),
    (
        "cifar100-corrupt",
        ["dataset=cifar100", "dataset.root={corrupt}", "dataset.download=false"],
        ["CIFAR-100 file", "meta is corrupt"],
    ),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_dataset_input_exits_2_with_one_line(tmp_path, args, expected):
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt" / "cifar-100-python"
    corrupt.mkdir(parents=True)
    for name in ("train", "test", "meta"):
        (corrupt / name).write_bytes(b"\x80\x04 not a pickle")
    args = [a.format(empty=tmp_path / "empty", corrupt=tmp_path / "corrupt") for a in args]
    result = subprocess.run(
        [str(VL_TRAIN), *args, "trainer.device=cpu", f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
