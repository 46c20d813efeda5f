"""Your own images: a folder of class folders, the layout torchvision's ImageFolder reads, or a flat folder and labels.

    ROOT/<class>/<image>                                   one tree: a seeded, stratified test_fraction is set aside
    ROOT/train/<class>/<image> + ROOT/test/<class>/<image>  the split is yours
    ROOT/<image> with dataset.labels (a CSV)                one tree, or the split is the CSV's split column
      or dataset.label_pattern (a regular expression)
    ROOT/train/<image> + ROOT/test/<image>, with either     the split is yours

Class names are the folder names, or the labels (data/labels.py), sorted. Every layout ends in the same list of
files grouped by class, sorted by name within each (scan(), ImageFolder._labelled()), so the test draw, the
cache, vl-eval and vl-predict work alike for all, and a folder of class folders read again as a flat folder with
a CSV draws the same test images. With `size` null, the images train at the most common (upright) size among
them, shrunk to `max_side` when it is larger (images.training_size): a folder of phone photos trains at 48x64,
not 3024x4032. plan() finds the files and that size from the cache or a sample of headers, before anything is
decoded, so the memory check (budget.py) comes first. The images are decoded once (data/images.py) into a uint8
cache in `cache_dir` (default ROOT/.visionlab), keyed by the file list, each file's size, modification time and
label and the decoding parameters, so a later run, or vl-eval, loads them in a fraction of a second and a changed
file is noticed. The test files drawn from one tree are recorded there too, so every run and vl-eval sees the
same test images even after files are added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import stat
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from visionlab.cache import PixelCache
from visionlab.checks import Each, Either, Maybe, Number, OneOf, Pattern, Switch, Text, Whole, WritesOutside
from visionlab.data.base import ImageDataset, LabeledImages, Plan, RawData
from visionlab.data.files import DataFiles
from visionlab.data.images import EXTENSIONS, common_size, decode_files, decoders, is_image, training_size, worker_count
from visionlab.data.labels import classes_of, labels_by_pattern, read_labels_file
from visionlab.errors import SettingRejected, UserError

log = logging.getLogger("visionlab")

SHOWN = 3  # bad files named in the error line; the count says how many more
DECODER = "simplejpeg-pillow-upright-3"  # part of the cache key: change it when data/images.py decodes differently
BY_NAME = operator.attrgetter("name")  # directory entries sort by name
LAYOUT = (
    "expected ROOT/<class>/<image>, or ROOT/train/<class>/<image> and ROOT/test/<class>/<image>; a flat folder "
    "of images needs dataset.labels or dataset.label_pattern"
)


@dataclass
class Scan:
    """One tree of class folders: its classes (sorted), each file's path, class, size and mtime,
    and what was ignored."""

    classes: list[str]
    # relative to the dataset root, with "/" (strings: a pathlib object per file costs time on big folders)
    files: list[str]
    labels: list[int]
    sizes: list[int]  # bytes
    mtimes: list[int]  # modification times, ns
    ignored: int  # files that are not images (by name), or outside the class folders

    def pick(self, indices: list[int], ignored: int) -> Scan:
        """These files, in this order, with their classes as they are."""
        return Scan(
            self.classes,
            [self.files[i] for i in indices],
            [self.labels[i] for i in indices],
            [self.sizes[i] for i in indices],
            [self.mtimes[i] for i in indices],
            ignored,
        )


@dataclass
class Found:
    """What plan() learned before decoding anything, and read() goes on from."""

    root: Path
    classes: list[str]
    files: list[str]  # in the order of the images: train, then test, each shuffled
    labels: np.ndarray
    n_train: int
    ignored: int
    key: dict  # the pixel cache's
    stored: tuple[torch.Tensor, dict] | None  # the cached images and their header's extra, if the cache has them
    # the most common upright (height, width): the cache's record, or a sample of headers
    common: tuple[int, int] | None
    size: tuple[int, int]  # what they train at
    sizes: list[int]  # each file's bytes, in the order of `files`: for the run's provenance
    labels_file: Path | None  # dataset.labels, which the run's provenance fingerprints with the images


@dataclass
class ImageFolder(ImageDataset):
    root: Annotated[str | None, Maybe(Text())] = None  # required: null is refused with the layout it needs
    # a flat folder's labels: a CSV of file names and labels (relative to root, or absolute), or a regular expression
    # whose first group (or group named label) in each file's name is its label; both null: the class folders' names
    labels: Annotated[str | None, Maybe(Text())] = None
    label_pattern: Annotated[str | None, Maybe(Pattern("label", r"'^(\d+)\.'"))] = None
    # [height, width] (one number: a square); null: the most common size among the files, shrunk to max_side
    size: Annotated[
        list[int] | None,
        Maybe(Either(Each(Whole(1, unit="pixels"), length=2, example="[64, 64]"), Whole(1, unit="pixels"))),
    ] = None
    channels: Annotated[int | None, Maybe(OneOf(1, 3))] = None  # 1 or 3; null: 1 if every file is grey, else 3
    # one tree only: the share of each class set aside for test
    test_fraction: Annotated[float, Number(gt=0, lt=1, example=0.2)] = 0.2
    seed: Annotated[int, Whole()] = 0  # the test draw and the order of the images
    # leave out unreadable files (with a warning naming each) instead of stopping
    skip_bad_files: Annotated[bool, Switch()] = False
    cache_dir: Annotated[str | None, Maybe(Text()), WritesOutside()] = None  # null: ROOT/.visionlab, beside the images
    workers: Annotated[int | None, Maybe(Whole(1))] = None  # decoding processes; null: one per core
    # size null: the longest side images train at, aspect kept; null: no limit
    max_side: Annotated[int | None, Maybe(Whole(1, unit="pixels"))] = 64
    _found: Found | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.labels is not None and self.label_pattern is not None:
            raise SettingRejected(
                "dataset.labels and dataset.label_pattern are both set: the labels come from one of them, so set "
                "the other to null"
            )
        if isinstance(self.size, int):
            self.size = [self.size, self.size]
        elif self.size is not None:
            self.size = list(self.size)

    def plan(self) -> Plan:
        """The files, and the size they will train at, from the cache or a sample of their headers:
        nothing is decoded."""
        root = self._root()
        train, test = self._split(root)
        n_train = len(train.files)
        # numpy, not torch, for these few whole-array steps: each small torch call waits for torch's threads on a
        # busy machine
        order = np.concatenate([self._order(n_train), n_train + self._order(len(test.files))])
        every = train.files + test.files
        files = [every[i] for i in order.tolist()]
        labels = np.array(train.labels + test.labels, dtype=np.int64)[order]
        sizes, mtimes = (
            np.array(train.sizes + test.sizes, dtype=np.int64)[order],
            np.array(train.mtimes + test.mtimes, dtype=np.int64)[order],
        )
        listing = hashlib.sha256("\n".join(files).encode())
        listing.update(sizes.astype("<i8").tobytes())
        listing.update(mtimes.astype("<i8").tobytes())
        # what each image is labelled, which a class folder's path says and a flat folder's does not: the cache
        # of a relabelled folder (a changed labels.csv) is a new one, as that of a file moved to another class folder
        labelled = hashlib.sha256("\n".join(train.classes).encode())
        labelled.update(labels.astype("<i8").tobytes())
        key = {
            "dataset": "folder",
            "split": "all",
            "files": listing.hexdigest(),
            "labels": labelled.hexdigest(),
            "size": self.size,
            "channels": self.channels,
            "max_side": None if self.size else self.max_side,
            "decoder": DECODER,
        }
        stored = PixelCache(self._cache_dir(root)).load(key, (len(files), self.channels, *(self.size or (None, None))))
        if stored is not None:
            common = tuple(stored[1]["common"]) if stored[1].get("common") else None
            size = tuple(stored[0].shape[2:])
        else:
            common = None if self.size else common_size([os.path.join(root, f) for f in files])
            size = tuple(self.size) if self.size else training_size(common, self.max_side)
        self._found = Found(
            root,
            train.classes,
            files,
            labels,
            n_train,
            train.ignored + test.ignored,
            key,
            stored,
            common,
            size,
            sizes.tolist(),
            self._labels_file(root) if self.labels is not None else None,
        )
        if common is not None and size != common:
            log.info(
                "folder: training at %dx%d pixels (height x width): the most common size, %dx%d, "
                "shrunk to dataset.max_side=%d on its longer side, aspect kept; "
                "dataset.size=[%d,%d] or dataset.max_side=%d changes it",
                *size,
                *common,
                self.max_side,
                *size,
                2 * self.max_side,
            )
        channels = self.channels or (stored[0].shape[1] if stored is not None else 3)
        return Plan((channels, *size), n_train, len(files) - n_train, len(train.classes), "dataset.size")

    def read(self) -> RawData:
        if self._found is None:  # read() without load()
            self.plan()
        found, self._found = self._found, None
        root, classes, files, labels, n_train = found.root, found.classes, found.files, found.labels, found.n_train
        images, bad = self._images(found)
        bad_in_train = sum(i < n_train for i in bad)
        log.info(
            "folder: %s images in %d classes from %s (%s train, %s test)%s",
            f"{len(files) - len(bad):,}",
            len(classes),
            root,
            f"{n_train - bad_in_train:,}",
            f"{len(files) - n_train - (len(bad) - bad_in_train):,}",
            f"; {found.ignored:,} files that are not images were ignored" if found.ignored else "",
        )
        keep = np.ones(len(files), dtype=bool)
        keep[list(bad)] = False
        parts = []
        for name, part in (("train", slice(0, n_train)), ("test", slice(n_train, len(files)))):
            kept = keep[part]
            part_images, part_labels = images[part], labels[part]
            if not kept.all():
                part_images, part_labels = part_images[torch.from_numpy(kept)], part_labels[kept]
            missing = [
                classes[c] for c, count in enumerate(np.bincount(part_labels, minlength=len(classes))) if not count
            ]
            if missing:
                raise UserError(
                    f"dataset.root={root}: no readable {name} images of class {', '.join(missing)}; add some, or "
                    "leave the class out"
                )
            parts.append(LabeledImages(part_images, torch.from_numpy(part_labels)))
        return RawData(parts[0], parts[1], classes, _data_files(found))

    # ---- finding the files ---------------------------------------------------------------------

    def _root(self) -> Path:
        if self.root is None:
            raise UserError(f"dataset.root=null: set it to a folder of class folders ({LAYOUT})")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise UserError(f"dataset.root={root} {'is not a folder' if root.exists() else 'does not exist'}: {LAYOUT}")
        return root.absolute()

    def _split(self, root: Path) -> tuple[Scan, Scan]:
        """(train, test) from ROOT/train + ROOT/test, or as a labels file's split column says, or drawn from the
        one tree."""
        given = _given_split(root)
        if self.labels is not None or self.label_pattern is not None:
            return self._split_labelled(root, given)
        if given:
            train, test = scan(root, "train"), scan(root, "test")
            if train.classes != test.classes:
                only_train = sorted(set(train.classes) - set(test.classes))
                only_test = sorted(set(test.classes) - set(train.classes))
                said = "; ".join(
                    s
                    for s in (
                        f"only in train/: {', '.join(only_train)}" if only_train else "",
                        f"only in test/: {', '.join(only_test)}" if only_test else "",
                    )
                    if s
                )
                raise UserError(
                    f"dataset.root={root}: train/ and test/ have different classes ({said}); give both the same "
                    "class folders"
                )
            return train, test
        return self._draw_test(root, scan(root, None))

    def _split_labelled(self, root: Path, given: bool) -> tuple[Scan, Scan]:
        """(train, test) of a flat folder labelled by a CSV or a pattern: as the CSV's split column says, else as
        ROOT/train and ROOT/test hold the files, else drawn as from one tree."""
        listing = _images_below(root, ("train", "test") if given else ("",))
        if not listing.files:
            raise UserError(
                f"dataset.root={root} holds no images for {self._source(root)} to label: put "
                f"{', '.join(EXTENSIONS)} files there"
            )
        if self.labels is not None:
            texts, splits = self._listed(root, listing.files)
            by = f"{self._source(root)} (its split column)"
        else:
            texts, splits = self._matched(root, listing.files), None
        if splits is None and given:
            splits = [name.split("/", 1)[0] for name in listing.files]
            by = f"dataset.root={root} (its train/ and test/)"
        tree, kept = _by_class(self._source(root), listing, texts)
        if splits is None:
            return self._draw_test(root, tree)
        return _as_given(tree, [splits[i] == "test" for i in kept], by)

    def _listed(self, root: Path, files: list[str]) -> tuple[list[str | None], list[str | None] | None]:
        """Each file's label in the labels file (None: left out) and, where it has a split column, its split."""
        listing = read_labels_file(self._labels_file(root))
        rows, missing = listing.for_files(files)
        self._leave_out(
            missing, f"files listed in {listing.named} but not found in {root}", "add them or remove their rows"
        )
        self._leave_out(
            [name for name, row in zip(files, rows) if row is None],
            f"images in {root} not listed in {listing.named}",
            f"list them, or move them out of {root}",
        )
        splits = [row.split if row else None for row in rows] if listing.has_split else None
        return [row.label if row else None for row in rows], splits

    def _matched(self, root: Path, files: list[str]) -> list[str | None]:
        """Each file's label by the pattern (None: left out)."""
        texts = labels_by_pattern(self.label_pattern, files)
        self._leave_out(
            [name for name, text in zip(files, texts) if text is None],
            f"images in {root} whose names {self._source(root)} does not match",
            "change the pattern, or rename or move the files",
        )
        return texts

    def _leave_out(self, names: list[str], what: str, remedy: str) -> None:
        """Files the labels cannot be matched with: one line naming the first few, and the run stops; or, with
        dataset.skip_bad_files, a warning, as for files that cannot be decoded, and the run goes on without them."""
        if not names:
            return
        more = f" and {len(names) - SHOWN:,} more" if len(names) > SHOWN else ""
        said = f"{len(names):,} {what}: {', '.join(names[:SHOWN])}{more}"
        if not self.skip_bad_files:
            raise UserError(f"{said}; {remedy}, or set dataset.skip_bad_files=true to leave them out")
        log.warning("folder: leaving out %s (dataset.skip_bad_files=true)", said)

    def _source(self, root: Path) -> str:
        """Where the labels come from, as messages name it."""
        if self.labels is not None:
            return f"dataset.labels={self._labels_file(root)}"
        return f"dataset.label_pattern='{self.label_pattern}'"

    def _labels_file(self, root: Path) -> Path:
        """dataset.labels: relative to the root, as the names it lists are, or absolute."""
        path = Path(self.labels).expanduser()
        return path if path.is_absolute() else root / path

    def _draw_test(self, root: Path, tree: Scan) -> tuple[Scan, Scan]:
        """A seeded, stratified test_fraction of each class,
        recorded in the cache folder the first time and read back after."""
        record = self._test_record(root)
        names = tree.files
        test_names = _read_record(record)
        if test_names is None:
            test_names = set(_stratified(tree.labels, self.test_fraction, self.seed, names))
            _write_record(record, self.seed, self.test_fraction, sorted(test_names))
        else:
            log.info(
                "folder: test images as recorded in %s (%s of them; files added since go to train)",
                record,
                f"{len(set(names) & test_names):,}",
            )
        is_test = [name in test_names for name in names]
        return (
            tree.pick([i for i, test in enumerate(is_test) if not test], tree.ignored),
            tree.pick([i for i, test in enumerate(is_test) if test], 0),
        )

    def _order(self, count: int) -> np.ndarray:
        """A seeded shuffle, so train_size/test_size take a mix of classes, not the first class folder."""
        return torch.randperm(count, generator=torch.Generator().manual_seed(self.seed)).numpy()

    def _cache_dir(self, root: Path) -> Path:
        return Path(self.cache_dir).expanduser().absolute() if self.cache_dir else root / ".visionlab"

    def _test_record(self, root: Path) -> Path:
        """Where the test draw is recorded: the folder's own .visionlab, or, in a dataset.cache_dir that other folders
        may share, under a name of this folder's own, so that no folder reads another's test images as its own."""
        name = f"test-split-seed{self.seed}-fraction{self.test_fraction:g}.json"
        if self.cache_dir:
            name = f"{hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]}-{name}"
        return self._cache_dir(root) / name

    # ---- decoding, once -------------------------------------------------------------------------

    def _images(self, found: Found) -> tuple[torch.Tensor, dict[int, str]]:
        """uint8 `[N, C, H, W]` in file order, from the cache or decoded (and cached), and the bad files
        (index -> reason)."""
        root, files = found.root, found.files
        started = time.perf_counter()
        cache = PixelCache(self._cache_dir(root))
        if found.stored is not None:
            images, extra = found.stored
            bad = dict.fromkeys(extra["bad"], "unreadable when the cache was made")
            self._check_bad(root, files, bad)
            log.info(
                "folder: %s decoded images loaded from %s in %.2f s",
                f"{len(files):,}",
                cache.path(found.key),
                time.perf_counter() - started,
            )
            return images, bad
        with cache.writing(found.key) as writer:
            decoded = decode_files(
                [os.path.join(root, f) for f in files],
                self.size,
                self.channels,
                worker_count(self.workers),
                writer.allocate,
                self.max_side,
                found.common,
            )
            self._check_bad(root, files, decoded.bad)
            common = Counter(s for s in decoded.sizes if s is not None).most_common(1)
            where = writer.commit(
                decoded.images, {"bad": sorted(decoded.bad), "common": list(common[0][0]) if common else None}
            )
        seconds = time.perf_counter() - started
        c, h, w = decoded.images.shape[1:]
        mixed = len({s for s in decoded.sizes if s is not None}) > 1
        grey = sum(decoded.grey)
        log.info(
            "folder: %s images decoded to %dx%dx%d in %.1f s (%s, %s per second)%s%s%s",
            f"{len(files):,}",
            c,
            h,
            w,
            seconds,
            decoders(decoded.workers, len(files), worker_count(self.workers)),
            f"{len(files) / max(seconds, 1e-9):,.0f}",
            "; files of other sizes were resized" if mixed else "",
            f"; {grey:,} grey files were converted to RGB"
            if c == 3 and grey
            else (
                f"; {len(files) - len(decoded.bad) - grey:,} colour files were converted to grey"
                if c == 1 and len(files) - len(decoded.bad) > grey
                else ""
            ),
            f"; {decoded.turned:,} turned upright by their EXIF orientation" if decoded.turned else "",
        )
        if where:
            log.info("folder: cached in %s", where)
        return decoded.images, decoded.bad

    def _check_bad(self, root: Path, files: list[str], bad: dict[int, str]) -> None:
        if not bad:
            return
        named = sorted(f"{files[i]} ({reason})" for i, reason in bad.items())
        if not self.skip_bad_files:
            more = f" and {len(named) - SHOWN:,} more" if len(named) > SHOWN else ""
            raise UserError(
                f"{len(named):,} files in {root} could not be read as images: {', '.join(named[:SHOWN])}{more}; "
                "fix or remove them, or set dataset.skip_bad_files=true to leave them out"
            )
        for line in named:
            log.warning("folder: skipping %s (dataset.skip_bad_files=true)", line)


def _given_split(root: Path) -> bool:
    """Whether ROOT holds train/ and test/, the split given; one of them alone is refused."""
    folders = {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if "train" not in folders and "test" not in folders:
        return False
    if not {"train", "test"} <= folders:
        have, lacks = ("train", "test") if "train" in folders else ("test", "train")
        raise UserError(
            f"dataset.root={root} has {have}/ but no {lacks}/: add {root / lacks}/, laid out as {have}/ is, or put "
            f"what {have}/ holds directly in {root}"
        )
    return True


def _images_below(root: Path, parts: tuple[str, ...]) -> Scan:
    """Every image below each of ROOT's `parts` ("": ROOT itself), not yet labelled (-1) and in no class."""
    files, sizes, mtimes, ignored = [], [], [], 0
    for part in parts:
        ignored += _walk(str(root / part), part, files, sizes, mtimes)
    return Scan([], files, [-1] * len(files), sizes, mtimes, ignored)


def _by_class(source: str, listing: Scan, texts: list[str | None]) -> tuple[Scan, list[int]]:
    """The files `texts` labels, grouped by class and sorted by name within each, as scan() gives class folders,
    and where each was in `listing`."""
    classes, index = classes_of(text for text in texts if text is not None)
    if len(classes) < 2:
        said = f"one class ({classes[0]})" if classes else "no image a label"
        raise UserError(f"{source} gives {said}: a classifier needs at least two classes")
    kept = sorted(
        (i for i, text in enumerate(texts) if text is not None), key=lambda i: (index[texts[i]], listing.files[i])
    )
    labels = [index.get(text, -1) for text in texts]  # -1: left out, never picked
    labelled = Scan(classes, listing.files, labels, listing.sizes, listing.mtimes, listing.ignored)
    return labelled.pick(kept, listing.ignored), kept


def _as_given(tree: Scan, is_test: list[bool], by: str) -> tuple[Scan, Scan]:
    """(train, test) as `by` says, each with images of every class."""
    train = tree.pick([i for i, test in enumerate(is_test) if not test], tree.ignored)
    test = tree.pick([i for i, test in enumerate(is_test) if test], 0)
    for name, part in (("train", train), ("test", test)):
        lacking = sorted(set(range(len(tree.classes))) - set(part.labels))
        if lacking:
            raise UserError(
                f"{by}: no {name} images of class {', '.join(tree.classes[c] for c in lacking)}; give every class "
                "train and test images"
            )
    return train, test


def _data_files(found: Found) -> DataFiles:
    """The images, and the labels file where there is one: the run's data fingerprint changes with its labels."""
    if found.labels_file is None:
        return DataFiles(found.root, found.files, found.sizes)
    name = os.path.relpath(found.labels_file, found.root)
    return DataFiles(found.root, [*found.files, name], [*found.sizes, found.labels_file.stat().st_size])


def scan(root: Path, part: str | None) -> Scan:
    """The class folders of ROOT (or ROOT/part): every image file below each, in sorted order,
    with its size and mtime."""
    top = root / part if part else root
    classes, files, labels, sizes, mtimes, ignored = [], [], [], [], [], 0
    for entry in sorted(os.scandir(top), key=BY_NAME):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored += 1  # a file outside the class folders
            continue
        prefix = f"{part}/{entry.name}" if part else entry.name
        before = len(files)
        skipped = _walk(entry.path, prefix, files, sizes, mtimes)
        ignored += skipped
        if len(files) == before:
            shown = f" (only {skipped:,} files that are not images)" if skipped else ""
            raise UserError(
                f"dataset.root={root}: class folder {prefix} holds no images{shown}; add {', '.join(EXTENSIONS)} "
                "files, or remove it"
            )
        labels += [len(classes)] * (len(files) - before)
        classes.append(entry.name)
    where = f"{top}" if part else f"dataset.root={root}"
    if not classes:
        raise UserError(f"{where} holds no class folders: {LAYOUT}")
    if len(classes) < 2:
        raise UserError(
            f"{where} has one class folder ({classes[0]}): a classifier needs at least two, one folder per class"
        )
    return Scan(classes, files, labels, sizes, mtimes, ignored)


def _walk(folder: str, prefix: str, files: list[str], sizes: list[int], mtimes: list[int]) -> int:
    """Append the image files anywhere below `folder` (as prefix/relative names, or relative names where the prefix
    is empty, sorted; hidden files and folders skipped), their sizes and mtimes; return how many other files there
    were.

    One stat per entry, which is most of a cached run's start, and
    little else: names sorted as strings, no DirEntry objects. A link to nothing named like an image
    is kept, with size -1, so that decoding names it among the unreadable files.
    """
    ignored = 0
    for name in sorted(os.listdir(folder)):
        path = f"{folder}/{name}"
        relative = f"{prefix}/{name}" if prefix else name
        try:
            info = os.stat(path)
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode):
            if not name.startswith("."):
                ignored += _walk(path, relative, files, sizes, mtimes)
        elif is_image(name):
            files.append(relative)
            sizes.append(info.st_size if info else -1)
            mtimes.append(info.st_mtime_ns if info else -1)
        else:
            ignored += 1
    return ignored


def _stratified(labels: list[int], fraction: float, seed: int, names: list[str]) -> list[str]:
    """round(fraction x n) files of each class (at least one, and never all of a class with two or more)."""
    generator = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    chosen = []
    for label in sorted(by_class):
        members = by_class[label]
        count = min(max(round(fraction * len(members)), 1), len(members) - 1)
        chosen += [names[members[i]] for i in torch.randperm(len(members), generator=generator)[:count].tolist()]
    return chosen


def _read_record(path: Path) -> set[str] | None:
    if not path.is_file():
        return None
    try:
        return set(json.loads(path.read_text())["test"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("folder: the recorded test split %s is unusable (%s); drawing it again", path, type(exc).__name__)
        return None


def _write_record(path: Path, seed: int, fraction: float, test: list[str]) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps({"seed": seed, "test_fraction": fraction, "test": test}, indent=0) + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        log.warning(
            "folder: could not record the test split in %s (%s); it is drawn again, the same way, next time", path, exc
        )
