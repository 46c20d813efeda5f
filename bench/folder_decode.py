"""`dataset=folder`'s first decode and its cache reload, beside torchvision's ImageFolder + DataLoader reading one epoch.

    .venv/bin/python bench/folder_decode.py                  # the CIFAR-10 JPEG tree, then its 128x128 copy
    .venv/bin/python bench/folder_decode.py --quick          # 2,000 files of each: a smoke run

The tree is ../shared/data/cifar10-jpeg.tar.gz unpacked into .cache/cifar10-jpeg (done here once);
the larger variant is its first --large-files training and test files resized to 128x128 (Pillow,
bicubic) and saved as JPEG (quality 90) in .cache/cifar10-jpeg-128, where decoding dominates.

Each measurement is its own process, one after the other, so its peak RSS is its own:
- ours: `ImageFolder(root).read()` (every file, train and test) into an empty cache folder: decode,
  convert, cache; then the same again, which reads the cache;
- the baseline: `torchvision.datasets.ImageFolder(root/train, transform=PILToTensor())` and
  `DataLoader(batch_size=256, num_workers=2)`, one pass over the training files (uint8 tensors,
  so it does no more per image than ours does).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from common import REPO, Row, Skipped, main, parser

JPEG_TREE = REPO / ".cache" / "cifar10-jpeg"
LARGE_TREE = REPO / ".cache" / "cifar10-jpeg-128"
ARCHIVE = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"

OURS = """
import json, resource, sys, time
sys.path.insert(0, {src!r})
from visionlab.data.folder import ImageFolder
started = time.perf_counter()
raw = ImageFolder(root={root!r}, cache_dir={cache!r}).read()
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "images": len(raw.train) + len(raw.test), "bytes": raw.train.images.nbytes + raw.test.images.nbytes,
                  "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""

BASELINE = """
import json, resource, time
import torch
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder
from torchvision.transforms import PILToTensor
started = time.perf_counter()
loader = DataLoader(ImageFolder({root!r}, transform=PILToTensor()), batch_size=256, num_workers=2)
images = sum(len(batch) for batch, _ in loader)
seconds = time.perf_counter() - started
print(json.dumps({{"seconds": seconds, "images": images, "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}}))
"""


def unpacked() -> Path:
    if not (JPEG_TREE / "train").is_dir():
        if not ARCHIVE.is_file():
            raise Skipped(f"the CIFAR-10 JPEG tree is absent: neither {JPEG_TREE} nor {ARCHIVE} exists")
        JPEG_TREE.mkdir(parents=True, exist_ok=True)
        with tarfile.open(ARCHIVE) as tar:
            tar.extractall(JPEG_TREE, filter="data")
    return JPEG_TREE


def resized_copy(source: Path, target: Path, files: int) -> Path:
    """The first `files` training and test files of each class folder (in proportion), as 128x128 JPEGs."""
    from PIL import Image

    for part, share in (("train", 5 / 6), ("test", 1 / 6)):
        for folder in sorted((source / part).iterdir()):
            out = target / part / folder.name
            if out.is_dir():
                continue
            out.mkdir(parents=True)
            for path in sorted(folder.glob("*.jpg"))[: round(files * share / 10)]:
                with Image.open(path) as image:
                    image.convert("RGB").resize((128, 128), Image.BICUBIC).save(out / path.name, quality=90)
    return target


def measure(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1200)
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def subset(tree: Path, files: int, folder: Path) -> Path:
    """A tree of symbolic links to the first `files` files (a --quick run's data)."""
    for part, share in (("train", 5 / 6), ("test", 1 / 6)):
        for classes in sorted((tree / part).iterdir()):
            out = folder / part / classes.name
            out.mkdir(parents=True)
            for path in sorted(classes.glob("*.jpg"))[: round(files * share / 10)]:
                (out / path.name).symlink_to(path)
    return folder


def rows_for(name: str, root: Path) -> list[Row]:
    src = str(REPO / "src")
    with tempfile.TemporaryDirectory() as cache:
        first = measure(OURS.format(src=src, root=str(root), cache=cache))
        second = measure(OURS.format(src=src, root=str(root), cache=cache))
    baseline = measure(BASELINE.format(root=str(root / "train")))
    ours_rate, their_rate = first["images"] / first["seconds"], baseline["images"] / baseline["seconds"]
    mib = 2**20
    return [
        Row(f"folder: {name}, first decode into the cache, images/s", f"{ours_rate:,.0f} ({first['images']:,} in {first['seconds']:.1f} s)",
            f"{their_rate:,.0f} (ImageFolder + DataLoader(num_workers=2), one epoch: {baseline['images']:,} in {baseline['seconds']:.1f} s)",
            f"{ours_rate / their_rate:.2f}x"),
        Row(f"folder: {name}, second run: the cache read back", f"{second['seconds']:.2f} s ({second['images']:,} images)",
            f"{baseline['seconds']:.1f} s (one more epoch)", f"{baseline['seconds'] / second['seconds']:.0f}x faster"),
        Row(f"folder: {name}, peak RSS, MiB (decode / cache read)", f"{first['rss'] / mib:,.0f} / {second['rss'] / mib:,.0f} (uint8 images: {first['bytes'] / mib:,.0f})",
            f"{baseline['rss'] / mib:,.0f} (the DataLoader's main process)", ""),
    ]


def make_rows(args) -> list[Row]:
    tree = unpacked()
    large = args.large_files if not args.quick else 2000
    with tempfile.TemporaryDirectory() as scratch:
        small = subset(tree, 2000, Path(scratch) / "small") if args.quick else tree
        rows = rows_for(f"CIFAR-10 JPEGs 32x32{' (2,000 files: --quick)' if args.quick else ''}", small)
        big = resized_copy(tree, LARGE_TREE if not args.quick else Path(scratch) / "large", large)
        rows += rows_for(f"the same as 128x128 JPEGs ({large:,} files)", big)
    return rows


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--large-files", type=int, default=12_000, help="files in the 128x128 copy (default 12,000)")
    main("folder decode", make_rows, arguments.parse_args())
