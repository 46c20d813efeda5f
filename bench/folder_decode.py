"""`dataset=folder`'s first decode and its cache reload,
beside torchvision's ImageFolder + DataLoader reading one epoch.

    .venv/bin/python bench/folder_decode.py                  # the CIFAR-10 JPEG tree,
                                                             # then 12,000 of its files as 128x128 JPEGs
    .venv/bin/python bench/folder_decode.py --quick          # 600 files of each, in this process: a smoke run (seconds)
    .venv/bin/python bench/folder_decode.py --tree /tmp/cifar10-jpeg --large-tree /tmp/cifar10-jpeg-128

The tree (--tree, default .cache/cifar10-jpeg) is ../shared/data/cifar10-jpeg.tar.gz, unpacked there
once if it has no train/. The larger variant (--large-tree, default .cache/cifar10-jpeg-128, made
once) is its first --large-files training and test files resized to 128x128 (Pillow, bicubic) and
saved as JPEG (quality 90): there decoding dominates.

Every file of a tree is read once before its measurements, so that ours (measured first) and the
baseline both read from the page cache. Each measurement is its own process, one after the other,
so its peak RSS is its own (--quick runs them all in this one):
- ours: `ImageFolder(root).read()` (every file, train and test) into an empty cache folder: list,
  stat, decode, convert, cache; then the same again, which reads the cache (and must give the same
  pixels: the bench checks their digest);
- the baseline: `torchvision.datasets.ImageFolder(root/train, transform=PILToTensor())` and
  `DataLoader(batch_size=256, num_workers=2)`, one pass over the training files (uint8 tensors,
  so it does no more per image than ours does);
- on the 128x128 tree, both again to 32x32: ours with `size=[32, 32]` (JPEGs decoded at 1/4 scale by
  libjpeg-turbo's DCT scaling, then resized), the baseline with `Resize((32, 32))` before `PILToTensor()`.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from common import REPO, Row, Skipped, main, parser

ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
QUICK_FILES = 600  # above data/images.py's PARALLEL_FROM, so --quick decodes in worker processes too
MIB = 2**20
READS = 5  # second runs, each reading the cache; the row gives the median


def ours(root: str, cache: str, size: int | None = None) -> dict:
    """One `ImageFolder(...).read()`, timed after the imports (and this process's CPU time: on a busy machine the wall
    clock mostly counts waiting for a core); the digest of its pixels is taken after the clock stops."""
    from visionlab.data.folder import ImageFolder

    started, cpu = time.perf_counter(), time.process_time()
    raw = ImageFolder(root=root, cache_dir=cache, size=size).read()
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    digest = hashlib.sha256()
    for part in (raw.train, raw.test):
        digest.update(part.images.contiguous().numpy().reshape(-1))
    return {
        "seconds": seconds,
        "cpu": cpu,
        "images": len(raw.train) + len(raw.test),
        "bytes": raw.train.images.nbytes + raw.test.images.nbytes,
        "digest": digest.hexdigest(),
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def baseline(root: str, size: int | None = None) -> dict:
    """One epoch of torchvision's ImageFolder through a DataLoader with two workers, timed after the imports."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder
    from torchvision.transforms import Compose, PILToTensor, Resize

    transform = PILToTensor() if size is None else Compose([Resize((size, size)), PILToTensor()])
    started = time.perf_counter()
    images = sum(
        len(batch) for batch, _ in DataLoader(ImageFolder(root, transform=transform), batch_size=256, num_workers=2)
    )
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "images": images, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def apart(function: str, *args) -> dict:
    """`function(*args)` of this file in a fresh Python process, for its own peak RSS."""
    code = (
        f"import json, sys; sys.path[:0] = [{str(REPO / 'bench')!r}, {str(REPO / 'src')!r}]; import folder_decode; "
        f"print(json.dumps(folder_decode.{function}(*{args!r})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def unpacked(tree: Path) -> Path:
    if not (tree / "train").is_dir():
        if not ARCHIVE.is_file():
            raise Skipped(f"the CIFAR-10 JPEG tree is absent: neither {tree / 'train'} nor {ARCHIVE} exists")
        tree.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(tree, filter="data")
    return tree


def first_files(tree: Path, files: int) -> list[tuple[Path, Path]]:
    """(file, its path relative to the tree) for the first `files` of the tree: 5/6 training, 1/6 test,
    the same number per class."""
    chosen = []
    for part, share in (("train", 5 / 6), ("test", 1 / 6)):
        for classes in sorted(os.listdir(tree / part)):
            names = sorted(name for name in os.listdir(tree / part / classes) if name.endswith(".jpg"))[
                : round(files * share / 10)
            ]
            # os.listdir: pathlib's glob took seconds
            chosen += [(tree / part / classes / name, Path(part, classes, name)) for name in names]
    return chosen


def resized_copy(source: Path, target: Path, files: int) -> Path:
    """The first `files` files of `source` as 128x128 JPEGs in `target` (kept: made once)."""
    from PIL import Image

    done = target / ".complete"
    if done.is_file() and done.read_text() == str(files):
        return target
    for path, relative in first_files(source, files):
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:
            image.convert("RGB").resize((128, 128), Image.BICUBIC).save(target / relative, quality=90)
    done.write_text(str(files))
    return target


def subset(tree: Path, files: int, folder: Path) -> Path:
    """A tree of symbolic links to the first `files` files (a --quick run's data)."""
    for path, relative in first_files(tree, files):
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).symlink_to(path)
    return folder


def warm(tree: Path) -> None:
    """Every file read once, so that both sides read from the page cache: the figures are about decoding,
    not the disk."""
    for folder, _, names in os.walk(tree):
        for name in names:
            with open(os.path.join(folder, name), "rb") as handle:
                handle.read()


def decode_rows(name: str, root: Path, measure) -> list[Row]:
    warm(root)
    with tempfile.TemporaryDirectory() as cache:
        first = measure("ours", str(root), cache)
        reads = sorted((measure("ours", str(root), cache) for _ in range(READS)), key=lambda read: read["seconds"])
        second = reads[len(reads) // 2]  # the median read
    theirs = measure("baseline", str(root / "train"))
    if any(read["digest"] != first["digest"] or read["images"] != first["images"] for read in reads):
        raise RuntimeError(
            f"{name}: the cache gave other images than the decoding ({second['images']:,} against {first['images']:,})"
        )
    ours_rate, their_rate = first["images"] / first["seconds"], theirs["images"] / theirs["seconds"]
    each_read = ", ".join(f"{read['seconds']:.2f}" for read in reads)
    return [
        Row(
            f"folder: {name}, first decode into the cache, images/s",
            f"{ours_rate:,.0f} ({first['images']:,} in {first['seconds']:.2f} s)",
            f"{their_rate:,.0f} (ImageFolder + DataLoader(num_workers=2), one epoch: {theirs['images']:,} in "
            f"{theirs['seconds']:.2f} s)",
            f"{ours_rate / their_rate:.2f}x",
        ),
        Row(
            f"folder: {name}, second run: the cache read back",
            f"{second['seconds']:.2f} s ({second['cpu']:.2f} s CPU; median of {len(reads)}: {each_read}; "
            f"{second['images']:,} images, same pixels)",
            f"{theirs['seconds']:.2f} s (one more epoch)",
            f"{theirs['seconds'] / second['seconds']:.0f}x faster",
        ),
        Row(
            f"folder: {name}, peak RSS, MiB (decode / cache read)",
            f"{first['rss'] / MIB:,.0f} / {second['rss'] / MIB:,.0f} (uint8 images: {first['bytes'] / MIB:,.0f})",
            f"{theirs['rss'] / MIB:,.0f} (the DataLoader's main process)",
            "",
        ),
    ]


def shrink_row(name: str, root: Path, measure) -> Row:
    with tempfile.TemporaryDirectory() as cache:
        first = measure("ours", str(root), cache, 32)
    theirs = measure("baseline", str(root / "train"), 32)
    ours_rate, their_rate = first["images"] / first["seconds"], theirs["images"] / theirs["seconds"]
    return Row(
        f"folder: {name} to 32x32, first decode into the cache, images/s",
        f"{ours_rate:,.0f} ({first['images']:,} in {first['seconds']:.2f} s)",
        f"{their_rate:,.0f} (the same + Resize((32, 32)): {theirs['images']:,} in {theirs['seconds']:.2f} s)",
        f"{ours_rate / their_rate:.2f}x",
    )


def make_rows(args) -> list[Row]:
    tree = unpacked(args.tree)
    here = args.quick
    measure = (lambda function, *rest: globals()[function](*rest)) if here else apart
    large = QUICK_FILES if here else args.large_files
    with tempfile.TemporaryDirectory() as scratch:
        small = subset(tree, QUICK_FILES, Path(scratch) / "small") if here else tree
        quick = f" ({QUICK_FILES:,} files, one process: --quick)" if here else ""
        rows = decode_rows(f"CIFAR-10 JPEGs 32x32{quick}", small, measure)
        big = resized_copy(tree, Path(scratch) / "large" if here else args.large_tree, large)
        name = f"the same as 128x128 JPEGs ({large:,} files{', --quick' if here else ''})"
        rows += decode_rows(name, big, measure)
        rows.append(shrink_row(name, big, measure))
    return rows


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--tree",
        type=Path,
        default=REPO / ".cache" / "cifar10-jpeg",
        help="the CIFAR-10 JPEG tree (unpacked there if absent)",
    )
    arguments.add_argument(
        "--large-tree",
        type=Path,
        default=REPO / ".cache" / "cifar10-jpeg-128",
        help="where the 128x128 copy is made once",
    )
    arguments.add_argument("--large-files", type=int, default=12_000, help="files in the 128x128 copy (default 12,000)")
    main("folder decode", make_rows, arguments.parse_args())
