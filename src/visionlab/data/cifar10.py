"""CIFAR-10 from the standard `cifar-10-batches-py` layout.

Checksums are verified when torchvision downloads the archive, not on every read, so a
locally rebuilt copy (such as one made from JPEGs) loads too.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from visionlab.checks import Switch, WritesOutside
from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.data.files import download, ensure_files
from visionlab.errors import UserError

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass
class CIFAR10(ImageDataset):
    root: str = "data"
    download: Annotated[bool, Switch(), WritesOutside(off=False)] = True  # a stored config never downloads (trust.py)

    def read(self) -> RawData:
        folder = Path(self.root).expanduser() / FOLDER
        files = ensure_files(
            "CIFAR-10",
            folder,
            TRAIN_FILES + TEST_FILES,
            self.download,
            lambda: download(folder.parent, "CIFAR10"),
        )
        return RawData(read_batches(folder, TRAIN_FILES), read_batches(folder, TEST_FILES), list(CLASSES), files)


def read_batches(folder: Path, names: list[str], label_key: str = "labels", dataset: str = "CIFAR-10") -> LabeledImages:
    """Pickled batches of `data` (N x 3072 bytes) and `label_key` lists: CIFAR-10's format, and CIFAR-100's."""
    images, labels = [], []
    for name in names:
        try:
            batch = read_pickle(folder / name)
            images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise UserError(
                f"{dataset} file {folder / name} is corrupt ({type(exc).__name__}: {exc}); delete it to download again"
            ) from exc
    return LabeledImages(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))


# What CIFAR's pickles hold besides plain containers: numpy arrays. A file naming anything else is refused
# before it is called, so a data folder from elsewhere runs no code (docs/architecture.md, "What is trusted").
# (numpy's module names before and after 2.0, and what each pickle protocol rebuilds an array with)
PICKLED_CLASSES = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        *(
            (f"numpy.{core}.{module}", name)
            for core in ("core", "_core")
            for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
        ),
    }
)


class DataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> type:
        if (module, name) not in PICKLED_CLASSES:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which CIFAR's files never hold")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return DataUnpickler(f, encoding="latin1").load()
