"""MNIST from the standard IDX files in `<root>/MNIST/raw/`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torchvision

from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.data.files import ensure_files
from visionlab.errors import UserError

FILES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


@dataclass
class MNIST(ImageDataset):
    root: str = "data"
    download: bool = True

    def read(self) -> RawData:
        root = Path(self.root).expanduser()
        ensure_files(
            "MNIST", root / "MNIST" / "raw", FILES, self.download,
            lambda: torchvision.datasets.MNIST(root, download=True),
        )
        try:
            train, test = (torchvision.datasets.MNIST(root, train=t, download=False) for t in (True, False))
        except (RuntimeError, ValueError, OSError) as exc:
            raise UserError(f"MNIST in {root / 'MNIST' / 'raw'} could not be read ({exc}); delete the files to download them again") from exc
        return RawData(
            LabeledImages(train.data.unsqueeze(1), train.targets),
            LabeledImages(test.data.unsqueeze(1), test.targets),
            [str(i) for i in range(10)],
        )
