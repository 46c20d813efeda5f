"""MNIST from the standard IDX files in `<root>/MNIST/raw/`.

The files are read here rather than through torchvision, whose import would add to every run's start-up
time and memory (BENCHMARKS.md, "Speed"); torchvision is loaded only to download them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import torch

from visionlab.checks import Switch, WritesOutside
from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.data.files import download, ensure_files
from visionlab.errors import UserError

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass
class MNIST(ImageDataset):
    """Also the base of datasets in MNIST's format (Fashion-MNIST): the same four files in `<root>/<folder>/raw/`."""

    root: str = "data"
    download: Annotated[bool, Switch(), WritesOutside(off=False)] = True  # a stored config never downloads (trust.py)
    name: ClassVar[str] = "MNIST"  # also the folder torchvision downloads into, and its dataset class
    classes: ClassVar[list[str]] = [str(i) for i in range(10)]

    def read(self) -> RawData:
        root = Path(self.root).expanduser()
        folder = root / self.name / "raw"
        files = ensure_files(self.name, folder, FILES, self.download, lambda: download(root, self.name))
        try:
            train_images, train_labels, test_images, test_labels = (read_idx(folder / name) for name in FILES)
        except (ValueError, OSError) as exc:
            raise UserError(
                f"{self.name} in {folder} could not be read ({exc}); delete the files to download them again"
            ) from exc
        return RawData(
            LabeledImages(train_images.unsqueeze(1), train_labels.long()),
            LabeledImages(test_images.unsqueeze(1), test_labels.long()),
            list(self.classes),
            files,
        )


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file of unsigned bytes (magic 0x00 0x00 0x08 <dims>, big-endian sizes, then the bytes) as uint8."""
    with open(path, "rb") as f:
        magic = f.read(4)
        if len(magic) < 4 or magic[:3] != b"\x00\x00\x08" or not 1 <= magic[3] <= 3:
            raise ValueError(f"{path.name} is not an IDX file of unsigned bytes")
        sizes = f.read(4 * magic[3])
        if len(sizes) < 4 * magic[3]:
            raise ValueError(f"{path.name} ends inside its header")
        shape = [int.from_bytes(sizes[i : i + 4], "big") for i in range(0, len(sizes), 4)]
        body = bytearray(math.prod(shape))
        if f.readinto(body) != len(body) or f.read(1):
            raise ValueError(f"{path.name} does not hold the {len(body):,} bytes its header announces")
    return torch.frombuffer(body, dtype=torch.uint8).view(shape)
