"""A folder as a phone gives it, through the real CLI: 12-megapixel JPEGs, portrait shots stored sideways with an
EXIF orientation, HEIC files. They train with the defaults at a small size; a run that cannot fit is refused before
anything is decoded or built (budget.py); photos are upright in training, vl-eval and vl-predict alike.

The photos are drawn here (a few random filled shapes on a plain background), each class its own kind of shape.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageOps

from tests.cli.test_predict import predict
from tests.conftest import VL_TRAIN, read_metrics
from visionlab.data.images import decode

PHONE = (4032, 3024)  # width, height of a 12-megapixel phone photo
FAST = ["trainer.device=cpu", "trainer.threads=1", "logging.graph=false"]
# Pillow's transposition that undoes each orientation's, so that a photo stored with it shows the upright picture
STORED = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def shapes(size: tuple[int, int], kind: str, rng: np.random.Generator) -> Image.Image:
    """A `size` (width, height) picture of three filled ellipses or rectangles."""
    width, height = size
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 110, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        side = int(rng.integers(min(size) // 6, min(size) // 3))
        x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
        getattr(draw, kind)([x, y, x + side, y + side], fill=tuple(int(v) for v in rng.integers(130, 256, 3)))
    return image


def with_orientation(image: Image.Image, orientation: int) -> tuple[Image.Image, bytes]:
    """The picture as a camera stores it with this EXIF orientation, and that EXIF block."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = image.transpose(STORED[orientation]) if STORED[orientation] is not None else image
    return stored, exif.tobytes()


def write_photos(root: Path, per_class: int, size: tuple[int, int] = PHONE, extension: str = "jpg") -> None:
    """Class folders `circles` and `squares` of `size` photos; every third one a portrait shot stored sideways
    (orientation 6)."""
    rng = np.random.default_rng(0)
    for name, kind in (("circles", "ellipse"), ("squares", "rectangle")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            portrait = i % 3 == 0
            upright = shapes(size[::-1] if portrait else size, kind, rng)
            stored, exif = with_orientation(upright, 6 if portrait else 1)
            stored.save(root / name / f"IMG_{i:04d}.{extension}", quality=85, exif=exif)


def run_measured(args: list[str], run_dir: Path, env: dict | None = None) -> tuple[int, str, int]:
    """vl-train as a user runs it: its exit code, its stderr and its peak resident memory in bytes
    (its own, by wait4)."""
    err_path = run_dir.parent / f"{run_dir.name}.stderr"
    with open(err_path, "w") as err:
        process = subprocess.Popen(
            [str(VL_TRAIN), *args, f"hydra.run.dir={run_dir}"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=run_dir.parent,
            env={**os.environ, **(env or {})},
        )
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, err_path.read_text(), usage.ru_maxrss * 1024


@pytest.fixture(scope="module")
def phone_photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("phone") / "photos"
    write_photos(root, per_class=20)
    return root


def test_forty_phone_photos_train_with_the_defaults_at_a_small_size(phone_photos, tmp_path):
    run_dir = tmp_path / "run"
    code, stderr, peak = run_measured(["dataset=folder", f"dataset.root={phone_photos}", "model=cnn", *FAST], run_dir)
    assert code == 0, stderr
    log = (run_dir / "train.log").read_text()
    assert (
        "folder: training at 48x64 pixels (height x width): the most common size, 3024x4032, "
        "shrunk to dataset.max_side=64 on its longer side, aspect kept; "
        "dataset.size=[48,64] or dataset.max_side=128 changes it"
    ) in log
    assert "40 images decoded to 3x48x64" in log and "14 turned upright by their EXIF orientation" in log
    needed = re.search(r"memory: this run needs about (\d+) MB of the", log)
    assert needed and int(needed.group(1)) < 300, log
    assert peak < 2 * 2**30  # the process, torch and all (it took 23 GB and the OOM killer before)
    assert read_metrics(run_dir)["status"] == "completed"
    cached = list((phone_photos / ".visionlab").glob("folder-all-*.u8"))
    assert len(cached) == 1 and cached[0].stat().st_size < 2**20  # 40 x 3x48x64 bytes, not 40 x 36.6 MB


def test_the_run_that_was_killed_for_memory_is_refused_before_anything_is_decoded_or_built(tmp_path):
    """The issue's run: the CNN built for 3x3024x4032 (1,560,698,386 parameters).
    VL_MEMORY_LIMIT stands for the machine."""
    root = tmp_path / "photos"
    write_photos(root, per_class=3)
    run_dir = tmp_path / "run"
    args = ["dataset=folder", f"dataset.root={root}", "model=cnn", "dataset.size=[3024,4032]", *FAST]
    code, stderr, peak = run_measured(args, run_dir, env={"VL_MEMORY_LIMIT": "16G"})
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    line = lines[0]
    assert "this run needs about" in line and "and 16.0 GB is free (VL_MEMORY_LIMIT)" in line
    assert "CNN's 1,560,698,386 parameters" in line and "69.8 GFLOPs per image" in line
    assert "bring it down with" in line and all(
        lever in line for lever in ("dataset.size=[48,64]", "model.*", "trainer.batch_size")
    )
    # nothing decoded
    assert not list((root / ".visionlab").glob("*.u8")) and not list((root / ".visionlab").glob(".*.tmp"))
    log = (run_dir / "train.log").read_text()
    assert "model: CNN" not in log and "decoded" not in log  # nothing built
    assert peak < 2 * 2**30


def test_near_the_limit_is_one_warning_and_the_run_goes_on(phone_photos, tmp_path):
    args = ["dataset=folder", f"dataset.root={phone_photos}", "model=cnn", "trainer.epochs=1", *FAST]
    code, stderr, _ = run_measured(args, tmp_path / "tight", env={"VL_MEMORY_LIMIT": "1M"})
    assert code == 2 and "is free (VL_MEMORY_LIMIT)" in stderr and "(VL_MEMORY_LIMIT says so)" in stderr
    needed = int(re.search(r"needs about (\d+) MB", stderr).group(1))
    assert needed > 20
    code, stderr, _ = run_measured(args, tmp_path / "near", env={"VL_MEMORY_LIMIT": f"{needed * 1.1:.3f}M"})
    assert code == 0, stderr
    warnings = [
        line for line in (tmp_path / "near" / "train.log").read_text().splitlines() if "[WARNING] memory:" in line
    ]
    assert (
        len(warnings) == 1
        and f"this run needs about {needed} MB" in warnings[0]
        and "it may swap or be killed" in warnings[0]
    )


def test_every_dataset_is_checked_before_it_is_read(tmp_path):
    """The synthetic images would be drawn in float32 first: 20,000 of 3x512x512 is refused before a pixel is drawn."""
    args = ["dataset=synthetic", "dataset.shape=[3,512,512]", "dataset.train_size=20000", "model=linear", *FAST]
    code, stderr, peak = run_measured(args, tmp_path / "run", env={"VL_MEMORY_LIMIT": "8G"})
    assert code == 2, stderr
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert "the images (21,000 x 3x512x512 bytes)" in line and "dataset.shape=[3,64,64]" in line
    assert peak < 2 * 2**30


# ---- the right way up -------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_each_exif_orientation_is_applied_as_pillow_applies_it(tmp_path, orientation):
    """simplejpeg's JPEGs, Pillow's (CMYK) JPEGs and PNGs, at their own size and shrunk:
    the pixels of exif_transpose."""
    upright = Image.fromarray(
        np.kron(np.random.default_rng(orientation).integers(0, 256, (6, 10, 3)), np.ones((8, 8, 1))).astype(np.uint8)
    )
    stored, exif = with_orientation(upright, orientation)
    files = {"jpg": stored, "cmyk.jpg": stored.convert("CMYK"), "png": stored}
    for name, image in files.items():
        path = tmp_path / f"photo.{name}"
        image.save(path, exif=exif, quality=95)
        with Image.open(path) as opened:
            expected = ImageOps.exif_transpose(opened).convert("RGB")
        picture = decode(path, 3)
        assert picture.orientation == orientation and picture.size == (48, 80), name
        assert np.array_equal(picture.pixels.transpose(1, 2, 0), np.asarray(expected)), name
        with Image.open(path) as opened:  # at a quarter: simplejpeg first decodes at that scale, as Pillow's draft does
            if name == "jpg":
                opened.draft("RGB", (20, 12) if orientation < 5 else (12, 20))
            small = ImageOps.exif_transpose(opened).convert("RGB").resize((20, 12), Image.BILINEAR)
        assert np.array_equal(decode(path, 3, (12, 20)).pixels.transpose(1, 2, 0), np.asarray(small)), name


@pytest.fixture(scope="module")
def sideways(tmp_path_factory) -> dict[str, Path]:
    """Classes `top` and `bottom` (a bright half), each photo stored with a random orientation:
    only upright do they differ."""
    base = tmp_path_factory.mktemp("sideways")
    rng = np.random.default_rng(1)
    for name in ("top", "bottom"):
        (base / "photos" / name).mkdir(parents=True)
        for i in range(24):
            pixels = rng.integers(0, 60, (24, 32, 3))
            half = slice(0, 12) if name == "top" else slice(12, 24)
            pixels[half] += 150
            stored, exif = with_orientation(Image.fromarray(pixels.astype(np.uint8)), int(rng.integers(1, 9)))
            stored.save(base / "photos" / name / f"{i:02d}.jpg", quality=95, exif=exif)
    stored, exif = with_orientation(Image.fromarray(np.full((24, 32, 3), 30, np.uint8)), 6)
    bright = np.asarray(stored).copy()
    bright[:, :12] = 190  # the left half as stored is the top half upright
    Image.fromarray(bright).save(base / "asked.jpg", quality=95, exif=exif)
    return {"base": base, "photos": base / "photos", "asked": base / "asked.jpg"}


def test_photos_are_upright_in_training_vl_eval_and_vl_predict(sideways):
    run_dir = sideways["base"] / "run"
    code, stderr, _ = run_measured(
        ["dataset=folder", f"dataset.root={sideways['photos']}", "model=knn", *FAST], run_dir
    )
    assert code == 0, stderr
    assert "turned upright by their EXIF orientation" in (run_dir / "train.log").read_text()
    assert read_metrics(run_dir)["test/acc"] == 1.0  # stored sideways and upside down, a kNN would be near chance
    done = subprocess.run(
        [str(VL_TRAIN.with_name("vl-eval")), str(run_dir)], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "eval_last_test.json").read_text())["test/acc"] == 1.0
    result = predict(run_dir, sideways["asked"], "--out", sideways["base"] / "asked", cwd=sideways["base"])
    assert result.returncode == 0, result.stderr
    assert "asked.jpg: turned upright by its EXIF orientation (6)" in result.stdout
    assert (sideways["base"] / "asked" / "predictions.csv").read_text().splitlines()[1].split(",")[1] == "top"


# ---- HEIC ---------------------------------------------------------------------------------------------


def test_a_folder_of_heic_photos_trains(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    root = tmp_path / "photos"
    write_photos(root, per_class=6, size=(640, 480), extension="heic")
    # a portrait shot: pillow-heif writes the orientation as the file's rotation
    path = root / "circles" / "IMG_0000.heic"
    with Image.open(path) as opened:
        expected = np.asarray(ImageOps.exif_transpose(opened).convert("RGB"))
    picture = decode(path, 3)
    assert picture.size == (640, 480) and np.array_equal(picture.pixels.transpose(1, 2, 0), expected)
    run_dir = tmp_path / "run"
    code, stderr, _ = run_measured(["dataset=folder", f"dataset.root={root}", "model=knn", *FAST], run_dir)
    assert code == 0, stderr
    log = (run_dir / "train.log").read_text()
    assert "12 images decoded to 3x48x64" in log and "12 images in 2 classes" in log


def test_heic_without_pillow_heif_is_one_line_naming_the_package(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    root = tmp_path / "photos"
    write_photos(root, per_class=3, size=(64, 48), extension="heic")
    missing = tmp_path / "without" / "pillow_heif"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text("raise ImportError('pillow-heif is not installed here')\n")
    paths = os.pathsep.join(p for p in (str(missing.parent), os.environ.get("PYTHONPATH", "")) if p)
    code, stderr, _ = run_measured(
        ["dataset=folder", f"dataset.root={root}", "model=knn", *FAST], tmp_path / "run", env={"PYTHONPATH": paths}
    )
    assert code == 2, stderr
    (line,) = [line for line in stderr.splitlines() if line.strip()]
    assert (
        "6 files in" in line
        and "circles/IMG_0000.heic (a HEIC/HEIF image: install pillow-heif (pip install pillow-heif)" in line
    )
