"""`dataset=folder` on real image files: every format and mode, the cache, the recorded test split, every bad input.

The folders are written here with Pillow: three colour classes in PNG (RGB, grey, RGBA, palette),
JPEG (colour and grey), BMP, GIF and WebP, mostly 16x16 with some 20x12, plus files that are not
images (.txt, .DS_Store) and, where a case needs them, broken ones.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import read_metrics, run_cli, run_tool, vl_train
from visionlab.cores import allowed
from visionlab.data.folder import ImageFolder
from visionlab.data.images import BadImage, decode

COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}
# (extension, Pillow mode) in turn; every 4th image is 20x12 instead of 16x16.
KINDS = [
    ("png", "RGB"),
    ("jpg", "RGB"),
    ("bmp", "RGB"),
    ("gif", "P"),
    ("webp", "RGB"),
    ("png", "L"),
    ("png", "RGBA"),
    ("jpg", "L"),
    ("png", "P"),
]
# No pictures but the confusion matrix, whose per-class accuracy scalars a test reads.
FAST = ["model=knn", "trainer.device=cpu", "trainer.threads=1", "logging=none", "logging.confusion_every_n_epochs=1"]


def write_folder(root: Path, per_class: int = 18, colours: dict = COLOURS, kinds=KINDS, seed: int = 0) -> list[Path]:
    """Class folders of noisy colour patches in every format; returns the image files written."""
    rng = np.random.default_rng(seed)
    written = []
    for name, colour in colours.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            extension, mode = kinds[i % len(kinds)]
            height, width = (12, 20) if i % 4 == 3 else (16, 16)
            pixels = (np.array(colour) + rng.integers(-25, 26, (height, width, 3))).clip(0, 255).astype(np.uint8)
            image = Image.fromarray(pixels)
            image = image.convert(mode) if mode != "P" else image.quantize(16)
            path = folder / f"{i:03d}.{extension}"
            image.save(path, quality=95) if extension in ("jpg", "webp") else image.save(path)
            written.append(path)
        (folder / "notes.txt").write_text("not an image")
        (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return written


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "photos"
    write_folder(root)
    return root


def log_of(run_dir: Path) -> str:
    return (run_dir / "train.log").read_text()


def test_a_folder_of_mixed_files_trains_and_names_classes_after_the_folders(tmp_path, folder):
    run_dir = tmp_path / "run"
    result = run_cli(["dataset=folder", f"dataset.root={folder}", *FAST], run_dir)
    assert result.returncode == 0, result.stderr
    log = log_of(run_dir)
    assert "54 images decoded to 3x16x16" in log and "files of other sizes were resized" in log
    cores = allowed().cores  # dataset.workers: null, one per core; 54 files are decoded here all the same
    assert (
        f"(in this process: fewer than 512 files do not pay for starting {cores} workers, "
        if cores > 1
        else "(1 process, "
    ) in log
    assert "grey files were converted to RGB" in log
    assert "6 files that are not images were ignored" in log  # a .txt and a .DS_Store per class
    assert "54 images in 3 classes" in log and "(42 train, 12 test)" in log  # 0.2 of 18 is 4 test images per class
    assert read_metrics(run_dir)["test/acc"] == 1.0  # the colours are far apart

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    events.Reload()
    assert {"test/per_class_acc/blue", "test/per_class_acc/green", "test/per_class_acc/red"} <= set(
        events.Tags()["scalars"]
    )
    done = run_tool("vl-eval", [run_dir], run_dir.parent, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((run_dir / "eval_last_test.json").read_text())
    assert report["classes"] == ["blue", "green", "red"] and report["test/acc"] == 1.0
    assert sum(map(sum, report["confusion_matrix"])) == 12


def test_the_test_split_is_stratified_recorded_and_kept_when_files_are_added(tmp_path, folder):
    first = ImageFolder(root=str(folder)).load()
    assert torch.bincount(first.test.labels).tolist() == [4, 4, 4] and len(first.train) == 42
    (record,) = (folder / ".visionlab").glob("test-split-*.json")
    recorded = json.loads(record.read_text())["test"]
    assert len(recorded) == 12 and all(name.split("/")[0] in COLOURS for name in recorded)

    write_folder(folder, per_class=24, seed=1)  # six more files per class, and new pixels for the old names
    again = ImageFolder(root=str(folder)).load()
    assert json.loads(record.read_text())["test"] == recorded
    assert len(again.test) == 12 and len(again.train) == 60  # the new files all went to train
    other_seed = ImageFolder(root=str(folder), seed=1).load()
    assert len(other_seed.test) == 15  # a new draw: 0.2 of 24 is 5 per class


def test_folders_sharing_a_cache_dir_each_keep_their_own_test_split(tmp_path):
    """Two folders with the same class and file names, one dataset.cache_dir: the second once read the first's
    recorded test draw as its own (a silent wrong test split, or a refusal when a class had no test image left)."""
    small, large, cache = tmp_path / "small", tmp_path / "large", tmp_path / "cache"
    write_folder(small, per_class=10)
    write_folder(large, per_class=30)
    shared = [ImageFolder(root=str(root), cache_dir=str(cache)).load() for root in (small, large)]
    alone = ImageFolder(root=str(large)).load()
    assert torch.bincount(shared[1].test.labels).tolist() == [6, 6, 6] == torch.bincount(alone.test.labels).tolist()
    assert torch.equal(shared[1].test.images, alone.test.images) and len(shared[0].test) == 6
    assert len(list(cache.glob("*-test-split-seed0-fraction0.2.json"))) == 2


def test_the_cache_is_read_back_notices_a_changed_file_and_survives_corruption(tmp_path, folder):
    runs = tmp_path / "runs"
    runs.mkdir()
    assert run_cli(["dataset=folder", f"dataset.root={folder}", *FAST], runs / "1").returncode == 0
    assert run_cli(["dataset=folder", f"dataset.root={folder}", *FAST], runs / "2").returncode == 0
    assert "decoded images loaded from" in log_of(runs / "2") and "images decoded to" not in log_of(runs / "2")

    changed = folder / "red" / "000.png"
    Image.new("RGB", (16, 16), (0, 0, 0)).save(changed)
    os.utime(changed, ns=(1, 1))  # a different file, with a different modification time
    direct = ImageFolder(root=str(folder)).load()
    assert (direct.train.images.flatten(1).amax(1) == 0).sum() + (direct.test.images.flatten(1).amax(1) == 0).sum() == 1

    cached = list((folder / ".visionlab").glob("folder-all-*.u8"))
    # one per state of the folder, no leftovers
    assert len(cached) == 2 and not list((folder / ".visionlab").glob(".*.tmp"))
    for path in cached:
        path.write_bytes(path.read_bytes()[:1000])  # truncated
    result = run_cli(["dataset=folder", f"dataset.root={folder}", *FAST], runs / "3")
    assert result.returncode == 0, result.stderr
    log = log_of(runs / "3")
    assert (
        "image cache:" in log
        and "is unusable" in log
        and "decoding the images again" in log
        and "images decoded to" in log
    )
    assert run_cli(["dataset=folder", f"dataset.root={folder}", *FAST], runs / "4").returncode == 0
    assert "decoded images loaded from" in log_of(runs / "4")


def test_a_cache_folder_that_cannot_be_written_costs_a_warning_not_the_run(tmp_path, folder, caplog):
    blocker = tmp_path / "a file"
    blocker.write_text("in the way")
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        uncached = ImageFolder(root=str(folder), cache_dir=str(blocker / "cache")).load()
    assert any(
        "image cache: could not write" in r.getMessage() and "the run goes on without it" in r.getMessage()
        for r in caplog.records
    )
    cached = ImageFolder(root=str(folder), cache_dir=str(tmp_path / "cache")).load()
    assert torch.equal(uncached.train.images, cached.train.images) and torch.equal(
        uncached.test.labels, cached.test.labels
    )


def test_train_and_test_folders_are_used_as_given(tmp_path):
    root = tmp_path / "split"
    write_folder(root / "train", per_class=9)
    write_folder(root / "test", per_class=3, seed=5)
    raw = ImageFolder(root=str(root)).load()
    assert raw.classes == ["blue", "green", "red"]
    assert len(raw.train) == 27 and torch.bincount(raw.test.labels).tolist() == [3, 3, 3]
    assert not list((root / ".visionlab").glob("test-split-*"))  # nothing drawn, nothing recorded


def test_size_and_channels_are_applied_as_asked(tmp_path, folder):
    grey = ImageFolder(root=str(folder), size=[8, 10], channels=1, cache_dir=str(tmp_path / "cache")).load()
    assert grey.train.images.shape[1:] == (1, 8, 10) and grey.train.images.dtype == torch.uint8
    pixels, own, is_grey, _ = decode(folder / "red" / "000.png", 1)  # an RGB PNG, to grey with Pillow's own weights
    expected = np.asarray(Image.open(folder / "red" / "000.png").convert("L"))
    assert not is_grey and own == (16, 16) and pixels.shape == (1, 16, 16) and np.array_equal(pixels[0], expected)
    pure_red = tmp_path / "red.png"
    Image.new("RGB", (4, 4), (255, 0, 0)).save(pure_red)
    assert decode(pure_red, 1)[0].tolist() == [[[76] * 4] * 4]  # ITU-R 601-2: 0.299 x 255

    all_grey = tmp_path / "grey"
    write_folder(all_grey, per_class=4, kinds=[("png", "L"), ("jpg", "L")])
    assert ImageFolder(root=str(all_grey)).load().train.images.shape[1] == 1  # channels from the files


def test_jpegs_decode_to_the_pixels_pillow_gives(tmp_path):
    """simplejpeg decodes YCbCr and grey JPEGs; the pixels are Pillow's, and every other JPEG goes to Pillow itself."""
    rng = np.random.default_rng(3)
    colour = Image.fromarray(rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    written = {"colour": colour, "grey": colour.convert("L"), "cmyk": colour.convert("CMYK")}
    for name, image in written.items():
        image.save(tmp_path / f"{name}.jpg", quality=85)
    for name in written:
        path = tmp_path / f"{name}.jpg"
        for channels in (1, 3):
            pixels, own, grey, _ = decode(path, channels)
            with Image.open(path) as opened:
                expected = np.asarray(opened.convert("L" if channels == 1 else "RGB"))
            assert own == (24, 40) and grey == (name == "grey"), name
            assert pixels.shape == (channels, 24, 40) and np.array_equal(
                pixels.transpose(1, 2, 0).squeeze(), expected
            ), (name, channels)
    pixels, own, grey, _ = decode(tmp_path / "grey.jpg", None)
    assert pixels.shape == (1, 24, 40) and grey

    grid = rng.integers(0, 256, (4, 4, 3))
    # 64x64: 4x4 squares
    Image.fromarray(np.kron(grid, np.ones((16, 16, 1))).astype(np.uint8)).save(tmp_path / "big.jpg", quality=95)
    shrunk, own, _, _ = decode(tmp_path / "big.jpg", 3, (16, 16))  # by DCT scaling (1/4), as Pillow's draft
    assert own == (64, 64) and shrunk.shape == (3, 16, 16)
    # each square's inner 2x2 pixels
    centres = shrunk.transpose(1, 2, 0).reshape(4, 4, 4, 4, 3)[:, 1:3, :, 1:3].astype(int)
    assert np.abs(centres - grid[:, None, :, None]).mean() < 4

    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "colour.jpg").read_bytes()[:300])
    with pytest.raises(BadImage, match="Truncated File Read"):  # Pillow's words: simplejpeg refused it
        decode(cut, 3)


def test_many_files_are_decoded_in_parallel_as_in_one_process(tmp_path):
    root = tmp_path / "many"
    write_folder(root, per_class=200, kinds=[("png", "RGB"), ("jpg", "L"), ("bmp", "RGB")])
    parallel = ImageFolder(root=str(root), workers=2, cache_dir=str(tmp_path / "a")).load()
    alone = ImageFolder(root=str(root), workers=1, cache_dir=str(tmp_path / "b")).load()
    assert torch.equal(parallel.train.images, alone.train.images) and torch.equal(
        parallel.test.labels, alone.test.labels
    )


def test_bad_files_can_be_skipped_with_a_warning_naming_each(tmp_path, folder):
    jpeg = (folder / "red" / "001.jpg").read_bytes()
    (folder / "red" / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (folder / "green" / "empty.png").write_bytes(b"")
    # a link to nothing is an unreadable file too
    (folder / "green" / "moved.png").symlink_to(tmp_path / "no-longer-here.png")
    run_dir = tmp_path / "run"
    result = run_cli(["dataset=folder", f"dataset.root={folder}", "dataset.skip_bad_files=true", *FAST], run_dir)
    assert result.returncode == 0, result.stderr
    log = log_of(run_dir)
    assert "skipping red/broken.jpg (" in log and "skipping green/empty.png (empty file)" in log
    assert "skipping green/moved.png (No such file or directory)" in log
    assert "54 images in 3 classes" in log


# ---- bad input: one line, exit code 2 -------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, Path]:
    """A folder per bad-input case."""
    base = tmp_path_factory.mktemp("broken")
    cases = {
        name: base / name
        for name in (
            "a_file",
            "no_classes",
            "empty_class",
            "one_class",
            "different_classes",
            "train_only",
            "truncated",
            "many_bad",
        )
    }
    cases["a_file"].write_text("a file, not a folder")
    cases["no_classes"].mkdir()
    (cases["no_classes"] / "photo.png").write_bytes(b"")
    write_folder(cases["empty_class"], per_class=2)
    (cases["empty_class"] / "cat").mkdir()
    (cases["empty_class"] / "cat" / "readme.txt").write_text("no images here")
    write_folder(cases["one_class"], per_class=3, colours={"red": (200, 0, 0)})
    write_folder(cases["different_classes"] / "train", per_class=2)
    write_folder(
        cases["different_classes"] / "test",
        per_class=2,
        colours={"blue": (0, 0, 200), "green": (0, 200, 0), "purple": (90, 0, 90)},
    )
    write_folder(cases["train_only"] / "train", per_class=2)
    write_folder(cases["truncated"], per_class=5)
    jpeg = (cases["truncated"] / "red" / "001.jpg").read_bytes()
    (cases["truncated"] / "red" / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    write_folder(cases["many_bad"], per_class=5)
    for i in range(5):
        (cases["many_bad"] / "blue" / f"bad{i}.png").write_bytes(b"\x89PNG not really")
    return cases


# (id, arguments, expected words in the one error line). {name} is a folder from `broken`.
CASES = [
    (
        "root-missing",
        ["dataset.root=/nowhere/photos"],
        ["dataset.root=/nowhere/photos does not exist", "ROOT/<class>/<image>"],
    ),
    ("root-unset", [], ["dataset.root=null", "ROOT/<class>/<image>"]),
    ("root-a-file", ["dataset.root={a_file}"], ["is not a folder"]),
    ("no-class-folders", ["dataset.root={no_classes}"], ["holds no class folders"]),
    (
        "class-without-images",
        ["dataset.root={empty_class}"],
        ["class folder cat holds no images", "only 1 files that are not images"],
    ),
    ("one-class", ["dataset.root={one_class}"], ["one class folder (red)", "at least two"]),
    (
        "different-classes",
        ["dataset.root={different_classes}"],
        ["train/ and test/ have different classes", "only in train/: red", "only in test/: purple"],
    ),
    ("train-without-test", ["dataset.root={train_only}"], ["has train/ but no test/"]),
    ("truncated-jpeg", ["dataset.root={truncated}"], ["1 files in", "red/cut.jpg (", "dataset.skip_bad_files=true"]),
    (
        "many-bad-files",
        ["dataset.root={many_bad}"],
        ["5 files in", "blue/bad0.png", "and 2 more", "dataset.skip_bad_files=true"],
    ),
    (
        "size",
        ["dataset.root={truncated}", "dataset.size=[0,8]"],
        ["dataset.size=[0, 8] is invalid", "a list of 2 whole numbers of pixels", "[64, 64]", "or null"],
    ),
    (
        "channels",
        ["dataset.root={truncated}", "dataset.channels=2"],
        ["dataset.channels=2 is invalid: use one of 1, 3, or null"],
    ),
    (
        "test-fraction",
        ["dataset.root={truncated}", "dataset.test_fraction=1.5"],
        ["dataset.test_fraction=1.5 is invalid: use a number in (0, 1)"],
    ),
    (
        "skip-bad-files",
        ["dataset.root={truncated}", "dataset.skip_bad_files=maybe"],
        ["dataset.skip_bad_files='maybe'", "true or false"],
    ),
    ("workers", ["dataset.root={truncated}", "dataset.workers=0"], ["dataset.workers=0", "at least 1"]),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_folder_input_exits_2_with_one_line(tmp_path, broken, args, expected):
    args = [
        "dataset=folder",
        *[a.format(**broken) for a in args],
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    result = vl_train(args, tmp_path, timeout=120)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
