"""Tensors on disk, so work done once (features, decoded image folders) is not done again by the next run.

A file is named after what determines its content (for features: the dataset, the official split,
a digest of its images and the extractors' parameters; for an image folder: its files, their sizes
and modification times, and the decoding parameters). The full key is stored inside too and checked
on reading; an unreadable or mismatched file is recomputed with a warning, never a crash. Writes go
through a temporary file and a rename, so parallel sweep jobs never read half a file. A folder that
cannot be written costs a warning; a full disk stops the run (errors.DiskFull) before it trains,
since its checkpoints would not fit either.

Features are `torch.save` files (TensorCache). An image folder's pixels are one raw uint8 file
(PixelCache): the decoding workers write their rows straight into it through a shared mapping, so
caching costs no copy and no second pass over the images (torch.save would write every pixel once
more), and a later run maps the file instead of reading it (BENCHMARKS.md, "Your own images").
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch

from visionlab.errors import writing

log = logging.getLogger("visionlab")

FORMAT = 1  # bump when the computation changes, so old files are not read
TRAILER = struct.Struct("<Q8s")  # a raw pixel file ends with its JSON header's length and this magic
MAGIC = b"vlpixel1"
Expected = dict[str, tuple[torch.dtype, tuple[int | None, ...]]]  # name -> dtype and shape (None: any size)


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of uint8 images and their shape, hashed as one buffer."""
    array = images.contiguous().cpu().numpy()
    digest = hashlib.sha256(str(tuple(array.shape)).encode())
    digest.update(array.reshape(-1))
    return digest.hexdigest()


class TensorCache:
    """Named tensors per key in `folder`; `what` and `redo` word the warnings ("features cache",
    "computing the features again")."""

    def __init__(self, folder: Path, what: str = "features cache", redo: str = "computing the features again"):
        self.folder = folder
        self.what = what
        self.redo = redo

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(_text(key).encode()).hexdigest()[:20]
        return self.folder / f"{key['dataset']}-{key['split']}-{digest}.pt"

    def load(self, key: dict[str, Any], expected: Expected) -> dict[str, torch.Tensor] | None:
        """The cached tensors for `key`, each of the expected dtype and shape; None when absent or unusable
        (then with a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            # pages are read as they are used
            stored = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if stored["key"] != _text(key):
                raise ValueError("it was written for other data or parameters")
            for name, (dtype, shape) in expected.items():
                tensor = stored[name]
                if (
                    tensor.dtype != dtype
                    or tensor.dim() != len(shape)
                    or any(s is not None and s != t for s, t in zip(shape, tensor.shape))
                ):
                    raise ValueError(f"its {name} are {tensor.dtype} {tuple(tensor.shape)}, expected {dtype} {shape}")
        except Exception as exc:  # any unreadable file (truncated, garbage, foreign) is recomputed
            _unusable(self.what, path, exc, self.redo)
            return None
        return {name: stored[name] for name in expected}

    def save(self, key: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Path | None:
        """Write atomically; a folder that cannot be written costs a warning, not the run (a full disk: DiskFull)."""
        path = self.path(key)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with _removed_unless_done(temporary), writing(self.folder, f"the {self.what} {path.name}"):
                self.folder.mkdir(parents=True, exist_ok=True)
                with open(temporary, "wb") as f:  # a Python file: a failed write's OSError comes with torch's error
                    torch.save({"key": _text(key), **{name: t.cpu().contiguous() for name, t in tensors.items()}}, f)
                os.replace(temporary, path)
        except OSError as exc:
            log.warning("%s: could not write %s (%s); the run goes on without it", self.what, path, exc)
            return None
        return path


class PixelCache:
    """One uint8 array per key in `folder`, as a raw file: the pixels, then a JSON header (the key, the shape,
    what the caller adds) and TRAILER. Read back as a copy-on-write memory map: pages are read as they are used."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, key: dict[str, Any]) -> Path:
        digest = hashlib.sha256(_text(key).encode()).hexdigest()[:20]
        return self.folder / f"{key['dataset']}-{key['split']}-{digest}.u8"

    def load(self, key: dict[str, Any], shape: tuple[int | None, ...]) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """The cached array for `key` if its shape fits `shape` (None: any size), and the header's `extra`;
        None when absent or unusable (then with a warning)."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                end = f.seek(0, os.SEEK_END)
                if end < TRAILER.size:
                    raise ValueError(f"it has {end} bytes")
                f.seek(end - TRAILER.size)
                length, magic = TRAILER.unpack(f.read(TRAILER.size))
                if magic != MAGIC or length > end - TRAILER.size:
                    raise ValueError("it does not end as a pixel cache does (truncated, or another kind of file)")
                f.seek(end - TRAILER.size - length)
                header = json.loads(f.read(length))
            if header["key"] != _text(key):
                raise ValueError("it was written for other data or parameters")
            stored = tuple(header["shape"])
            if len(stored) != len(shape) or any(s is not None and s != t for s, t in zip(shape, stored)):
                raise ValueError(f"it holds {stored}, expected {shape}")
            if math.prod(stored) + length + TRAILER.size != end:
                raise ValueError(
                    f"it has {end:,} bytes, not the {math.prod(stored) + length + TRAILER.size:,} its header says"
                )
            pixels = (
                np.memmap(path, dtype=np.uint8, mode="c", shape=stored)
                if math.prod(stored)
                else np.zeros(stored, np.uint8)
            )
        except FileNotFoundError:
            return None
        except Exception as exc:  # any unreadable file (truncated, garbage, foreign) is recomputed
            _unusable("image cache", path, exc, "decoding the images again")
            return None
        return torch.from_numpy(pixels), header["extra"]

    @contextlib.contextmanager
    def writing(self, key: dict[str, Any]):
        """A PixelWriter for `key`; whatever it allocated and did not commit is removed on leaving."""
        writer = PixelWriter(self.path(key), _text(key))
        try:
            yield writer
        finally:
            writer.discard()


class PixelWriter:
    """Arrays to fill in place (each a temporary file in the cache folder, mapped shared so forked workers can write
    into it), and the one that becomes the cache file."""

    def __init__(self, path: Path, key: str):
        self.path = path
        self.key = key
        self.temporary: dict[int, Path] = {}  # address of an allocated array -> its file
        self.allocated = 0
        self.writable = True

    def allocate(self, shape: tuple[int, ...]) -> np.ndarray:
        """Zeroed uint8 memory of `shape`, shared with forked children; anonymous memory if no file can be written."""
        size = math.prod(shape)
        if self.writable and size:
            temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.{self.allocated}.tmp")
            self.allocated += 1
            try:
                what = f"the image cache {self.path.name} ({size:,} bytes)"
                with _removed_unless_done(temporary), writing(self.path.parent, what):
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    handle = os.open(temporary, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
                    try:
                        os.ftruncate(handle, size)  # zeros
                        # (not on macOS) the space reserved: a full disk is an OSError here, not a SIGBUS mid-decode
                        if hasattr(os, "posix_fallocate"):
                            os.posix_fallocate(handle, 0, size)
                        array = np.frombuffer(mmap.mmap(handle, size), dtype=np.uint8).reshape(shape)
                    finally:
                        os.close(handle)
                self.temporary[array.ctypes.data] = temporary
                return array
            except OSError as exc:
                log.warning("image cache: could not write %s (%s); the run goes on without it", self.path, exc)
                self.writable = False
        return shared_zeros(shape)

    def commit(self, pixels: torch.Tensor, extra: dict[str, Any]) -> Path | None:
        """Make the allocated array under `pixels` the cache file, with `extra` in its header;
        None if it has no file."""
        temporary = self.temporary.pop(pixels.data_ptr(), None)
        if temporary is None:
            return None
        header = json.dumps({"key": self.key, "shape": list(pixels.shape), "extra": extra}).encode()
        try:
            with _removed_unless_done(temporary), writing(self.path.parent, f"the image cache {self.path.name}"):
                with open(temporary, "ab") as f:  # after the pixels, which the mapping keeps in the page cache
                    f.write(header + TRAILER.pack(len(header), MAGIC))
                os.replace(temporary, self.path)
        except OSError as exc:
            log.warning("image cache: could not write %s (%s); the run goes on without it", self.path, exc)
            return None
        return self.path

    def discard(self) -> None:
        """Remove the files of arrays not committed (their memory stays valid while mapped)."""
        for temporary in self.temporary.values():
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
        self.temporary.clear()


def shared_zeros(shape: tuple[int, ...]) -> np.ndarray:
    """Zeroed uint8 memory shared with forked workers (an anonymous MAP_SHARED mapping: no /dev/shm needed)."""
    size = math.prod(shape)
    return np.frombuffer(mmap.mmap(-1, max(size, 1)), dtype=np.uint8, count=size).reshape(shape)


@contextlib.contextmanager
def _removed_unless_done(temporary: Path):
    """A write that fails, whatever the reason, leaves no temporary file behind."""
    try:
        yield
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise


def _unusable(what: str, path: Path, exc: Exception, redo: str) -> None:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    log.warning("%s: %s is unusable (%s: %s); %s", what, path, type(exc).__name__, reason, redo)


def _text(key: dict[str, Any]) -> str:
    return json.dumps({**key, "format": FORMAT}, sort_keys=True)
