"""Image files to uint8 arrays: decoded, converted to 1 or 3 channels and resized once, in parallel across the cores.

Shared by `dataset=folder` and `vl-predict`, so a picture given to a model is prepared exactly as its training
images were. JPEGs (the common case, in YCbCr or grey) are decoded by simplejpeg (libjpeg-turbo called straight
from C: for a small file Pillow's Python-level opening and loading cost far more than the decoding;
BENCHMARKS.md, "Your own images"), a JPEG shrunk by half or more straight to the smallest scale of at least the
target size (libjpeg's DCT scaling, as Pillow's `draft`). Pillow does the rest: every other format and JPEG
colour space, every JPEG simplejpeg refuses (so a bad file is named in Pillow's words), grey conversion (its
"L": ITU-R 601-2 luma) and resizing (its bilinear filter, antialiased when shrinking). Both decode a JPEG with
libjpeg-turbo's default (accurate) DCT and upsampling, so they give the same pixels. Every file is turned
upright by its EXIF orientation (data/orientation.py) before it is resized, so sizes here are upright sizes.
HEIC/HEIF (iPhones) is read by Pillow through pillow-heif, imported at the first such file. Workers hold no
torch tensors: every torch call on a tiny tensor waits for torch's thread pool, which, on cores other work
holds, costs more than the decoding. (torchvision.io decodes JPEGs too, but its image decoding is deprecated
since torchvision 0.29, gives a palette PNG's indices instead of its colours, and every worker would pay its
import in start-up time and memory.)
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
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import NamedTuple

import numpy as np
import simplejpeg
import torch
from PIL import Image, UnidentifiedImageError

from visionlab.cache import shared_zeros
from visionlab.console import console, live_progress_enabled
from visionlab.cores import allowed
from visionlab.data import orientation

log = logging.getLogger("visionlab")

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".heic", ".heif")
HEIF_EXTENSIONS = (".heic", ".heif")
# an ISO box file's ftyp brands that libheif reads
HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F")  # a palette counts as colour
JPEG_START = b"\xff\xd8\xff"  # a JPEG by its bytes, whatever its name
# the JPEG colour spaces simplejpeg decodes here -> grey; others go to Pillow
TURBO_SPACES = {"YCbCr": False, "Gray": True}
CHUNK = 256  # files per task handed to a worker
PARALLEL_FROM = 512  # fewer files are decoded in this process: starting workers would cost more
SAMPLE = 64  # file headers read to guess the most common size before decoding
READ = 1 << 16  # bytes per read() call: most images are smaller; a larger buffer costs its allocation per file


class BadImage(Exception):
    """A file that cannot be decoded as an image; the message says why, in a few words."""


def is_image(name: str) -> bool:
    """By its file name: a known extension, and not a hidden file (such as macOS's ._photo.jpg resource forks)."""
    return name.lower().endswith(EXTENSIONS) and not name.startswith(".")


class Picture(NamedTuple):
    """One decoded file: uint8 `[C, H, W]` pixels, the file's own upright (height, width), whether it is grey,
    and the EXIF orientation that was applied (1: none)."""

    pixels: np.ndarray
    size: tuple[int, int]
    grey: bool
    orientation: int


def decode(path: str | Path, channels: int | None, size: Sequence[int] | None = None) -> Picture:
    """The file upright, as `[C, H, W]` (C: `channels`; None: 1 for a grey file, else 3) at `size` (height, width;
    None: its own upright size).

    Alpha is dropped, a palette expanded, an animation's first frame taken, 16-bit samples cut to their high byte.
    """
    data = _read(path)
    if data.startswith(JPEG_START) and (done := _decode_jpeg(data, channels, size)) is not None:
        return done
    image, grey, turn = _decode_pillow(data, channels)
    pixels = orientation.upright(np.asarray(image), turn)
    own = pixels.shape[:2]
    return Picture(_chw(_resized(pixels, size or own)), own, grey, turn)


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


def _decode_jpeg(data: bytes, channels: int | None, size: Sequence[int] | None) -> Picture | None:
    """decode() by simplejpeg, or None for a JPEG it should not or cannot decode (Pillow then decides)."""
    try:
        height, width, space, _ = simplejpeg.decode_jpeg_header(data)
        if space not in TURBO_SPACES:
            return None
        grey = TURBO_SPACES[space]
        wanted = channels or (1 if grey else 3)
        turn = orientation.of_jpeg(data)
        own = orientation.turned((height, width), turn)
        target = own if size is None else tuple(size)
        stored = orientation.turned(target, turn)  # the target as the file stores it, for the DCT scaling
        halved = 2 * stored[0] <= height and 2 * stored[1] <= width
        shrink = {"min_height": stored[0], "min_width": stored[1], "min_factor": 2} if halved else {}
        pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if grey and wanted == 1 else "RGB", **shrink)
    except ValueError:
        # corrupt, truncated or unsupported: Pillow names the reason, or reads what libjpeg-turbo only warned about
        return None
    image = orientation.upright(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels, turn)
    to_grey = wanted == 1 and not grey
    if to_grey or image.shape[:2] != target:  # as Pillow's route does it: convert, then resize
        picture = Image.fromarray(np.ascontiguousarray(image))
        image = resize(picture.convert("L") if to_grey else picture, target)
    return Picture(_chw(image), own, grey, turn)


def _decode_pillow(data: bytes, channels: int | None) -> tuple[Image.Image, bool, int]:
    """The bytes as a Pillow image at its own stored size in mode "L" (`channels` 1, or None for a grey file) or "RGB",
    whether it is grey, and its EXIF orientation."""
    if data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS:
        read_heif()
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return _converted(opened, channels)
    except UnidentifiedImageError:
        raise BadImage("not an image Pillow can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # Pillow's ways of saying truncated or corrupt
        raise BadImage(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None


def _converted(opened: Image.Image, channels: int | None) -> tuple[Image.Image, bool, int]:
    grey = opened.mode in GREY_MODES
    image = opened
    if opened.mode.startswith("I"):
        image = Image.fromarray((np.asarray(opened, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    wanted = channels or (1 if grey else 3)
    return image.convert("L" if wanted == 1 else "RGB"), grey, orientation.of_image(opened)


def decode_image(image: Image.Image, channels: int | None, size: Sequence[int] | None = None) -> Picture:
    """A Pillow image already in memory (visionlab.predict), as decode() prepares a file's."""
    try:
        converted, grey, turn = _converted(image, channels)
    except (OSError, ValueError) as exc:
        raise BadImage(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__) from None
    pixels = orientation.upright(np.asarray(converted), turn)
    own = pixels.shape[:2]
    return Picture(_chw(_resized(pixels, size or own)), own, grey, turn)


@cache
def read_heif() -> None:
    """Teach Pillow HEIC/HEIF (pillow-heif, a dependency; its import is slow,
    so only runs with such files pay it)."""
    try:
        import pillow_heif
    except ImportError:
        raise BadImage("a HEIC/HEIF image: install pillow-heif (pip install pillow-heif) to read it") from None
    pillow_heif.register_heif_opener()


def resize(image: Image.Image, size: Sequence[int]) -> Image.Image:
    """To `size` (height, width) with Pillow's bilinear filter (a no-op at the same size)."""
    height, width = size
    return image if image.size == (width, height) else image.resize((width, height), Image.BILINEAR)


def _resized(pixels: np.ndarray, size: Sequence[int]) -> np.ndarray | Image.Image:
    """`[H, W]` or `[H, W, 3]` pixels at `size`, through resize() when they are not at it already."""
    return pixels if pixels.shape[:2] == tuple(size) else resize(Image.fromarray(np.ascontiguousarray(pixels)), size)


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
    sizes: list[tuple[int, int] | None]  # each file's own upright (height, width); None if bad
    grey: list[bool]
    bad: dict[int, str]  # file index -> reason
    workers: int  # processes that decoded them
    turned: int  # files turned upright by their EXIF orientation


def training_size(common: tuple[int, int], max_side: int | None) -> tuple[int, int]:
    """The size images of the most common size `common` train at: `common` itself when neither side exceeds
    `max_side` (None: no limit), else shrunk, aspect kept, until the longer side is `max_side` (docs/datasets.md)."""
    height, width = common
    if max_side is None or max(height, width) <= max_side:
        return common
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def decode_files(
    paths: Sequence[str | Path],
    size: Sequence[int] | None,
    channels: int | None,
    workers: int,
    allocate: Callable[[tuple[int, ...]], np.ndarray] = shared_zeros,
    max_side: int | None = None,
    common: tuple[int, int] | None = None,
) -> Decoded:
    """Decode every file to `size` (None: the training_size of the most common size among them) and `channels`
    (None: 1 if all are grey, else 3).

    Workers decode chunks in order, each image straight to the target size (`common`, or a sample of
    headers, guesses the most common size first; at a wrong guess every file is redone), into rows of
    an array from `allocate(shape)`: zeroed uint8 memory shared with forked children
    (PixelWriter.allocate: the cache file itself). No pixel crosses a pipe: pickling a chunk's pixels
    back, and unpickling them in the parent, is work of the size of the decoding itself, done by one process.
    """
    n = len(paths)
    target = tuple(size) if size is not None else training_size(common or common_size(paths), max_side)
    out = allocate((n, channels or 3, *target))
    sizes: list[tuple[int, int] | None] = [None] * n
    grey = [False] * n
    turns = [1] * n
    bad: dict[int, str] = {}
    used = _decode_in_chunks(paths, list(range(n)), target, channels, workers, out, sizes, grey, turns, bad)
    if size is None and len(bad) < n:
        found = training_size(Counter(s for s in sizes if s is not None).most_common(1)[0][0], max_side)
        if found != target:
            out = allocate((n, channels or 3, *found))
            _decode_in_chunks(
                paths, [i for i in range(n) if i not in bad], found, channels, workers, out, sizes, grey, turns, bad
            )
    if channels is None and n > len(bad) and all(g for i, g in enumerate(grey) if i not in bad):
        first = allocate((n, 1, *out.shape[2:]))
        first[:] = out[:, :1]
        out = first
    return Decoded(torch.from_numpy(out), sizes, grey, bad, used, sum(t != 1 for t in turns))


_OUT: np.ndarray | None = None  # the array being filled: forked workers inherit it and write their rows straight in


def common_size(paths: Sequence[str | Path]) -> tuple[int, int]:
    """The most common upright (height, width) among the headers of an even sample of SAMPLE files
    ((32, 32) if none reads)."""
    if any(str(path).lower().endswith(HEIF_EXTENSIONS) for path in paths):
        try:
            read_heif()  # before any worker forks, so each inherits it
        except BadImage:
            pass  # each such file is then reported as unreadable, with the package to install
    found = Counter()
    for path in paths[:: max(1, len(paths) // SAMPLE)]:
        try:
            with Image.open(path) as image:
                found[orientation.turned((image.height, image.width), orientation.of_image(image))] += 1
        except Exception:  # a bad file is reported by the decoding itself
            continue
    return found.most_common(1)[0][0] if found else (32, 32)


def _decode_in_chunks(paths, indices, target, channels, workers, out, sizes, grey, turns, bad) -> int:
    """Fill `out` for the files at `indices`; returns the processes used."""
    global _OUT
    chunks = [indices[i : i + CHUNK] for i in range(0, len(indices), CHUNK)]
    workers = min(workers, len(chunks)) if len(indices) >= PARALLEL_FROM else 1
    tasks = [([paths[i] for i in chunk], chunk, target, channels) for chunk in chunks]
    _OUT = out
    # Forked before the progress bar's thread starts; the children need nothing the parent has not loaded.
    pool = (
        ProcessPoolExecutor(workers, mp_context=get_context("fork"), initializer=_one_thread) if workers > 1 else None
    )
    with _Progress(len(indices)) as progress:
        results = pool.map(_decode_chunk, tasks) if pool is not None else map(_decode_chunk, tasks)
        try:
            for chunk, infos in zip(chunks, results):
                for index, (own_size, is_grey, turn, reason) in zip(chunk, infos):
                    sizes[index], grey[index], turns[index] = own_size, is_grey, turn
                    if reason is not None:
                        bad[index] = reason
                progress.advance(len(chunk))
        finally:
            _OUT = None
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    return workers


def _one_thread() -> None:
    """A forked worker must not enter the parent's OpenMP thread pool (it would wait forever),
    as in DataLoader's workers."""
    torch.set_num_threads(1)


def _decode_chunk(task) -> list[tuple]:
    """In a worker: write the chunk's images into their rows of `_OUT`; per file (own size, grey, orientation,
    reason if bad)."""
    paths, rows, target, channels = task
    infos = []
    for path, row in zip(paths, rows):
        try:
            picture = decode(path, channels or 3, target)
        except BadImage as exc:
            infos.append((None, False, 1, str(exc)))
            continue
        infos.append((picture.size, picture.grey, picture.orientation, None))
        _OUT[row] = picture.pixels
    return infos


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
