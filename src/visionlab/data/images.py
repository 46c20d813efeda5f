"""Image files to uint8 arrays: decoded, converted to 1 or 3 channels and resized once, in parallel across the cores.

Shared by `dataset=folder` and `vl-predict`, so a picture given to a model is prepared exactly as
its training images were. JPEGs (the common case, in YCbCr or grey) are decoded by simplejpeg
(libjpeg-turbo called straight from C: 11 µs for a 32x32 file, where Pillow's Python-level
opening and loading take 120 µs), a JPEG shrunk by half or more straight to the smallest scale of
at least the target size (libjpeg's DCT scaling, as Pillow's `draft`). Pillow does the rest: every
other format and JPEG colour space, every JPEG simplejpeg refuses (so a bad file is named in
Pillow's words), grey conversion (its "L": ITU-R 601-2 luma) and resizing (its bilinear filter,
antialiased when shrinking). Both decode a JPEG with libjpeg-turbo's default (accurate) DCT and
upsampling, so they give the same pixels. Workers hold no torch tensors: torch's per-image calls on
tiny tensors, with its thread pool on a busy machine, made decoding up to 9x slower. (torchvision.io
decodes JPEGs too, but its image decoding is deprecated since torchvision 0.29, gives a palette
PNG's indices instead of its colours, and its import costs each worker 2 s and 164 MB.)
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from PIL import Image, UnidentifiedImageError

from visionlab.cache import shared_zeros
from visionlab.cores import allowed
from visionlab.console import console, live_progress_enabled

log = logging.getLogger("visionlab")

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")  # a palette counts as colour
JPEG_START = b"\xff\xd8\xff"  # a JPEG by its bytes, whatever its name
TURBO_SPACES = {"YCbCr": False, "Gray": True}  # the JPEG colour spaces simplejpeg decodes here -> grey; others go to Pillow
CHUNK = 256  # files per task handed to a worker
PARALLEL_FROM = 512  # fewer files are decoded in this process: starting workers would cost more
SAMPLE = 64  # file headers read to guess the most common size before decoding
READ = 1 << 16  # bytes per read() call: most images are smaller; a larger buffer costs its allocation per file


class BadImage(Exception):
    """A file that cannot be decoded as an image; the message says why, in a few words."""


def is_image(name: str) -> bool:
    """By its file name: a known extension, and not a hidden file (such as macOS's ._photo.jpg resource forks)."""
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


def decode(path: str | Path, channels: int | None, size: Sequence[int] | None = None) -> tuple[np.ndarray, tuple[int, int], bool]:
    """The file as uint8 `[C, H, W]` (C: `channels`; None: 1 for a grey file, else 3) at `size` (height, width;
    None: its own), the file's own (height, width), and whether the file is grey.

    Alpha is dropped, a palette expanded, an animation's first frame taken, 16-bit samples cut to their high byte.
    """
    data = _read(path)
    if data.startswith(JPEG_START) and (done := _decode_jpeg(data, channels, size)) is not None:
        return done
    image, grey = _decode_pillow(data, channels)
    own = (image.height, image.width)
    return _chw(resize(image, size or own)), own, grey


def _read(path: str | Path) -> bytes:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise BadImage(exc.strerror or str(exc)) from None
    try:
        parts = []
        while part := os.read(handle, READ):
            parts.append(part)
    except OSError as exc:
        raise BadImage(exc.strerror or str(exc)) from None
    finally:
        os.close(handle)
    if not parts:
        raise BadImage("empty file")
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _decode_jpeg(data: bytes, channels: int | None, size: Sequence[int] | None) -> tuple[np.ndarray, tuple[int, int], bool] | None:
    """decode() by simplejpeg, or None for a JPEG it should not or cannot decode (Pillow then decides)."""
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in TURBO_SPACES:
            return None
        grey = TURBO_SPACES[space]
        wanted = channels or (1 if grey else 3)
        target = (height, width) if size is None else tuple(size)
        halved = 2 * target[0] <= height and 2 * target[1] <= width
        shrink = {"min_height": target[0], "min_width": target[1], "min_factor": 2} if halved else {}
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey and wanted == 1 else "RGB", **shrink)
    except ValueError:  # corrupt, truncated or unsupported: Pillow names the reason, or reads what libjpeg-turbo only warned about
        return None
    image = pixels[:, :, 0] if pixels.shape[2] == 1 else pixels
    to_grey = wanted == 1 and not grey
    if to_grey or image.shape[:2] != target:  # as Pillow's route does it: convert, then resize
        picture = Image.fromarray(image)
        image = resize(picture.convert("L") if to_grey else picture, target)
    return _chw(image), (height, width), grey


def _decode_pillow(data: bytes, channels: int | None) -> tuple[Image.Image, bool]:
    """The bytes as a Pillow image at its own size in mode "L" (`channels` 1, or None for a grey file) or "RGB", and whether it is grey."""
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            grey = opened.mode in GREY_MODES
            image = opened
            if opened.mode.startswith("I"):
                image = Image.fromarray((np.asarray(opened, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
            wanted = channels or (1 if grey else 3)
            return image.convert("L" if wanted == 1 else "RGB"), grey
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying truncated or corrupt
        raise BadImage(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None


def resize(image: Image.Image, size: Sequence[int]) -> Image.Image:
    """To `size` (height, width) with Pillow's bilinear filter (a no-op at the same size)."""
    height, width = size
    return image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)


def _chw(image: Image.Image | np.ndarray) -> np.ndarray:
    """A mode "L" or "RGB" image (or its `[H, W]` / `[H, W, 3]` array) as a uint8 `[C, H, W]` view."""
    array = np.asarray(image)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """decode()'s `[C, H, W]` pixels as a tensor of its own (they may be a read-only view of a decoder's buffer)."""
    return torch.from_numpy(pixels.copy())


@dataclass
class Decoded:
    """What decode_files found: images in file order, and for every file its own size, greyness or why it is bad."""

    images: torch.Tensor  # uint8 [N, C, H, W], one row per file (zeros for bad files)
    sizes: list[tuple[int, int] | None]  # each file's own (height, width); None if bad
    grey: list[bool]
    bad: dict[int, str]  # file index -> reason
    workers: int  # processes that decoded them


def decode_files(paths: Sequence[str | Path], size: Sequence[int] | None, channels: int | None, workers: int,
                 allocate: Callable[[tuple[int, ...]], np.ndarray] = shared_zeros) -> Decoded:
    """Decode every file to `size` (None: the most common size among them) and `channels` (None: 1 if all are grey, else 3).

    Workers decode chunks in order, each image straight to the target size (a sample of headers
    guesses the most common size first; the few files decoded at a wrong guess are redone), into
    rows of an array from `allocate(shape)`: zeroed uint8 memory shared with forked children
    (PixelWriter.allocate: the cache file itself). No pixel crosses a pipe: pickling a chunk's pixels
    back had made two workers slower than one on 128x128 images.
    """
    n = len(paths)
    target = tuple(size) if size is not None else _guess_size(paths)
    out = allocate((n, channels or 3, *target))
    sizes: list[tuple[int, int] | None] = [None] * n
    grey = [False] * n
    bad: dict[int, str] = {}
    used, pending = _decode_in_chunks(paths, list(range(n)), target, channels, size is None, workers, out, sizes, grey, bad)
    if size is None and len(bad) < n:
        most_common = Counter(s for s in sizes if s is not None).most_common(1)[0][0]
        if most_common != target:
            out = allocate((n, channels or 3, *most_common))
            pending = [i for i in range(n) if i not in bad]
            target = most_common
        if pending:
            _decode_in_chunks(paths, pending, target, channels, False, workers, out, sizes, grey, bad)
    if channels is None and n > len(bad) and all(g for i, g in enumerate(grey) if i not in bad):
        first = allocate((n, 1, *out.shape[2:]))
        first[:] = out[:, :1]
        out = first
    return Decoded(torch.from_numpy(out), sizes, grey, bad, used)


_OUT: np.ndarray | None = None  # the array being filled: forked workers inherit it and write their rows straight in


def _guess_size(paths: Sequence[str | Path]) -> tuple[int, int]:
    found = Counter()
    for path in paths[:: max(1, len(paths) // SAMPLE)]:
        try:
            with Image.open(path) as image:
                found[(image.height, image.width)] += 1
        except Exception:  # a bad file is reported by the decoding itself
            continue
    return found.most_common(1)[0][0] if found else (32, 32)


def _decode_in_chunks(paths, indices, target, channels, only_native, workers, out, sizes, grey, bad) -> tuple[int, list[int]]:
    """Fill `out` for the files at `indices`; with `only_native`, only those whose own size is `target`.

    Returns the processes used and the files left (of another size).
    """
    global _OUT
    chunks = [indices[i:i + CHUNK] for i in range(0, len(indices), CHUNK)]
    workers = min(workers, len(chunks)) if len(indices) >= PARALLEL_FROM else 1
    tasks = [([paths[i] for i in chunk], chunk, target, channels, only_native) for chunk in chunks]
    skipped: list[int] = []
    _OUT = out
    # Forked before the progress bar's thread starts; the children need nothing the parent has not loaded.
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_one_thread) if workers > 1 else None
    with _Progress(len(indices)) as progress:
        results = pool.map(_decode_chunk, tasks) if pool is not None else map(_decode_chunk, tasks)
        try:
            for chunk, (kept, infos) in zip(chunks, results):
                for position, (own_size, is_grey, reason) in enumerate(infos):
                    index = chunk[position]
                    sizes[index], grey[index] = own_size, is_grey
                    if reason is not None:
                        bad[index] = reason
                    elif position not in kept:
                        skipped.append(index)
                progress.advance(len(chunk))
        finally:
            _OUT = None
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return workers, skipped


def _one_thread() -> None:
    """A forked worker must not enter the parent's OpenMP thread pool (it would wait forever), as in DataLoader's workers."""
    torch.set_num_threads(1)


def _decode_chunk(task) -> tuple[set[int], list[tuple]]:
    """In a worker: write the chunk's images into their rows of `_OUT`; (positions written, per file (own size, grey, reason if bad))."""
    paths, rows, target, channels, only_native = task
    kept, infos = set(), []
    for position, (path, row) in enumerate(zip(paths, rows)):
        try:
            pixels, own, is_grey = decode(path, channels or 3, None if only_native else target)
        except BadImage as exc:
            infos.append((None, False, str(exc)))
            continue
        infos.append((own, is_grey, None))
        if not only_native or own == target:
            kept.add(position)
            _OUT[row] = pixels
    return kept, infos


class _Progress:
    """A bar on a terminal; elsewhere a plain line at every tenth of the files."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.started = time.perf_counter()
        self.bar = None

    def __enter__(self) -> _Progress:
        if live_progress_enabled() and self.total >= PARALLEL_FROM:
            from rich.progress import Progress

            self.bar = Progress(console=console, transient=True)
            self.bar.start()
            self.task = self.bar.add_task("decoding images", total=self.total)
        return self

    def advance(self, count: int) -> None:
        before, self.done = self.done, self.done + count
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
        elif self.total >= PARALLEL_FROM and before * 10 // self.total != self.done * 10 // self.total:
            rate = self.done / max(time.perf_counter() - self.started, 1e-9)
            log.info("decoding images: %s of %s (%s per second)", f"{self.done:,}", f"{self.total:,}", f"{rate:,.0f}")

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def worker_count(workers: int | None) -> int:
    """`dataset.workers`, or the cores this process may use (docs/architecture.md, "Sharing the CPU cores")."""
    return workers or allowed().cores


def decoders(used: int, files: int, asked: int) -> str:
    """What decoded the files, for the log: `2 processes`, or why it was this one alone."""
    if used == 1 and asked > 1 and files < PARALLEL_FROM:
        return f"in this process: fewer than {PARALLEL_FROM} files do not pay for starting {asked} workers"
    return f"{used} process{'es' * (used != 1)}"
