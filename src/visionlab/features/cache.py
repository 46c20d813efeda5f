"""Features on disk, so a sweep over models computes each split's features once.

A file is named after what determines its content: the dataset, the official split, a digest of
its images (so a different train_size, a rebuilt dataset or new pixels get a new file) and the
extractors' parameters. The full key is stored inside too and checked on reading; an unreadable or
mismatched file is recomputed with a warning, never a crash. Writes go through a temporary file and
a rename, so parallel sweep jobs never read half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("visionlab")

FORMAT = 1  # bump when the computation changes, so old files are not read


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of uint8 images and their shape: 0.1 s for CIFAR-10's 150 MB."""
    array = images.contiguous().cpu().numpy()
    digest = hashlib.sha256(str(tuple(array.shape)).encode())
    digest.update(array.reshape(-1))
    return digest.hexdigest()


class FeatureCache:
    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(_text(key).encode()).hexdigest()[:20]
        return self.folder / f"{key['dataset']}-{key['split']}-{digest}.pt"

    def load(self, key: dict[str, Any], rows: int, columns: int) -> torch.Tensor | None:
        """The cached float32 `[rows, columns]` features for `key`; None when absent or unusable (then with a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True)
            features = stored["features"]
            if stored["key"] != _text(key):
                raise ValueError("it was written for other data or parameters")
            if features.dtype != torch.float32 or tuple(features.shape) != (rows, columns):
                raise ValueError(f"it holds {features.dtype} {tuple(features.shape)}, expected float32 {(rows, columns)}")
        except Exception as exc:  # any unreadable file (truncated, garbage, foreign) is recomputed
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("features cache: %s is unusable (%s: %s); computing the features again", path, type(exc).__name__, reason)
            return None
        return features

    def save(self, key: dict[str, Any], features: torch.Tensor) -> Path | None:
        """Write atomically; a folder that cannot be written costs a warning, not the run."""
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save({"key": _text(key), "features": features.cpu().contiguous()}, temporary)
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            log.warning("features cache: could not write %s (%s); the run goes on without it", path, exc)
            return None
        return path


def _text(key: dict[str, Any]) -> str:
    return json.dumps({**key, "format": FORMAT}, sort_keys=True)
