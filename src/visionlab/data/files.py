"""Find a dataset's files under `dataset.root`, downloading once if allowed and possible, and name them.

A dataset names the files its images came from in `RawData.files` (what `ensure_files` returns), so
a run fingerprints its data (provenance.py) without the dataset knowing how.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from visionlab.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataFiles:
    """The files a dataset read its images from: `names` ("/"-separated) relative to `root`."""

    root: Path
    names: list[str]
    sizes: list[int] | None = None  # each name's bytes, where the dataset has them: the fingerprint need not stat


def ensure_files(name: str, folder: Path, files: list[str], download: bool, fetch: Callable[[], None]) -> DataFiles:
    """`files` in `folder`; one clear line when they are not there and cannot be downloaded."""
    missing = [f for f in files if not (folder / f).is_file()]
    if not missing:
        return DataFiles(folder, list(files))
    reason = "dataset.download=false"
    if download:
        log.info("%s: %s not found, downloading into %s", name, ", ".join(missing), folder.parent)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # torchvision prints per-mirror chatter
                fetch()
            return DataFiles(folder, list(files))
        except Exception as exc:  # any failure (no network, bad checksum) ends in the same advice
            reason = f"download failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'})"
    raise UserError(
        f"{name} not found in {folder}: expected {', '.join(files)}; {reason}. "
        f"Set dataset.root (or VL_DATA_DIR) to the folder that holds them."
    )


def download(root: Path, dataset: str) -> None:
    """torchvision.datasets.<dataset>'s download into `root` (checksums verified); torchvision is imported only here,
    since its import would add to every run's start-up and memory."""
    import torchvision

    getattr(torchvision.datasets, dataset)(root, download=True)
