"""Tensors on disk, so work done once (features, decoded image folders) is not done again by the next run.

A file is named after what determines its content (for features: the dataset, the official split,
a digest of its images and the extractors' parameters; for an image folder: its files, their sizes
and modification times, and the decoding parameters). The full key is stored inside too and checked
on reading; an unreadable or mismatched file is recomputed with a warning, never a crash. Writes go
through a temporary file and a rename, so parallel sweep jobs never read half a file.
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
Expected = dict[str, tuple[torch.dtype, tuple[int | None, ...]]]  # name -> dtype and shape (None: any size)


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of uint8 images and their shape: 0.1 s for CIFAR-10's 150 MB."""
    array = images.contiguous().cpu().numpy()
    digest = hashlib.sha256(str(tuple(array.shape)).encode())
    digest.update(array.reshape(-1))
    return digest.hexdigest()


class TensorCache:
    """Named tensors per key in `folder`; `what` and `redo` word the warnings ("features cache", "computing the features again")."""

    def __init__(self, folder: Path, what: str = "features cache", redo: str = "computing the features again"):
        self.folder = folder
        self.what = what
        self.redo = redo

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(_text(key).encode()).hexdigest()[:20]
        return self.folder / f"{key['dataset']}-{key['split']}-{digest}.pt"

    def load(self, key: dict[str, Any], expected: Expected) -> dict[str, torch.Tensor] | None:
        """The cached tensors for `key`, each of the expected dtype and shape; None when absent or unusable (then with a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # pages are read as they are used
            if stored["key"] != _text(key):
                raise ValueError("it was written for other data or parameters")
            for name, (dtype, shape) in expected.items():
                tensor = stored[name]
                if tensor.dtype != dtype or tensor.dim() != len(shape) or any(s is not None and s != t for s, t in zip(shape, tensor.shape)):
                    raise ValueError(f"its {name} are {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
        except Exception as exc:  # any unreadable file (truncated, garbage, foreign) is recomputed
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.warning("%s: %s is unusable (%s: %s); %s", self.what, path, type(exc).__name__, reason, self.redo)
            return None
        return {name: stored[name] for name in expected}

    def save(self, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path | None:
        """Write atomically; a folder that cannot be written costs a warning, not the run."""
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            torch.save({"key": _text(key), **{name: t.cpu().contiguous() for name, t in tensors.items()}}, temporary)
            os.replace(temporary, path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            log.warning("%s: could not write %s (%s); the run goes on without it", self.what, path, exc)
            return None
        return path


def _text(key: dict[str, Any]) -> str:
    return json.dumps({**key, "format": FORMAT}, sort_keys=True)
