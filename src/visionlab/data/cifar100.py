"""CIFAR-100 from the standard `cifar-100-python` layout: 100 fine classes, or their 20 superclasses.

The same pickled format as CIFAR-10 (one `train` and one `test` file), with `fine_labels` and
`coarse_labels`; the class names come from its `meta` file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from visionlab.checks import OneOf, Switch, WritesOutside
from visionlab.data.base import ImageDataset, RawData
from visionlab.data.cifar10 import read_batches, read_pickle
from visionlab.data.files import download, ensure_files
from visionlab.errors import UserError

FOLDER = "cifar-100-python"
FILES = ["train", "test", "meta"]
LABEL_TYPES = ("fine", "coarse")


@dataclass
class CIFAR100(ImageDataset):
    root: str = "data"
    download: Annotated[bool, Switch(), WritesOutside(off=False)] = True  # a stored config never downloads (trust.py)
    label_type: Annotated[str, OneOf(*LABEL_TYPES)] = "fine"  # fine: 100 classes; coarse: 20 superclasses

    def read(self) -> RawData:
        folder = Path(self.root).expanduser() / FOLDER
        files = ensure_files("CIFAR-100", folder, FILES, self.download, lambda: download(folder.parent, "CIFAR100"))
        key = f"{self.label_type}_labels"
        try:
            classes = list(read_pickle(folder / "meta")[f"{self.label_type}_label_names"])
        except (OSError, pickle.UnpicklingError, EOFError, KeyError, ValueError, TypeError) as exc:
            raise UserError(
                f"CIFAR-100 file {folder / 'meta'} is corrupt ({type(exc).__name__}); delete it to download again"
            ) from exc
        train, test = (
            read_batches(folder, ["train"], key, "CIFAR-100"),
            read_batches(folder, ["test"], key, "CIFAR-100"),
        )
        return RawData(train, test, classes, files)
