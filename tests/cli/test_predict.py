"""`vl-predict` end to end: train on a folder of real files, then ask about other files, as a user would."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_cli, run_tool
from tests.data.test_folder import FAST, write_folder
from tests.data.test_more_datasets import write_idx_dataset
from visionlab.data.fashion_mnist import FashionMNIST


def predict(*args, cwd: Path) -> subprocess.CompletedProcess:
    return run_tool("vl-predict", list(args), cwd, timeout=180)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A linear model and a kNN trained on three colour classes, and some files to ask about."""
    base = tmp_path_factory.mktemp("predict")
    write_folder(base / "photos")
    runs = {}
    for model in ("linear", "knn"):
        runs[model] = base / model
        extra = ["model=linear", "trainer.epochs=3", "optimizer.lr=0.05"] if model == "linear" else ["model.k=3"]
        result = run_cli(["dataset=folder", f"dataset.root={base / 'photos'}", *FAST, *extra], runs[model])
        assert result.returncode == 0, result.stderr
    asked = base / "asked"
    asked.mkdir()
    Image.fromarray(np.full((40, 60, 3), (215, 35, 35), np.uint8)).save(asked / "big_red.jpg")  # resized
    # grey into RGB
    Image.fromarray(np.full((16, 16, 3), (35, 185, 65), np.uint8)).convert("L").save(asked / "grey.png")
    Image.fromarray(np.full((16, 16, 3), (45, 55, 205), np.uint8)).save(asked / "blue.webp")
    (asked / "notes.txt").write_text("not an image")
    return {**runs, "asked": asked, "base": base}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_writes_the_top_k_table_csv_and_picture(trained):
    out = trained["base"] / "out_linear"
    result = predict(trained["linear"], trained["asked"], "--top-k", "2", "--out", out, cwd=trained["base"])
    assert result.returncode == 0, result.stderr
    assert "ignored 1 files that are not images" in result.stdout
    assert "grey.png: grey file converted to RGB" in result.stdout
    assert "big_red.jpg: resized from 60x40 to 16x16" in result.stdout
    table = rows(out / "predictions.csv")
    assert [Path(r["file"]).name for r in table] == ["big_red.jpg", "blue.webp", "grey.png"]
    by_name = {Path(r["file"]).name: r for r in table}
    assert by_name["big_red.jpg"]["predicted"] == "red" and by_name["blue.webp"]["predicted"] == "blue"
    for row in table:
        assert set(row) >= {"class_1", "probability_1", "class_2", "probability_2"} and "class_3" not in row
        assert 0 <= float(row["probability_2"]) <= float(row["probability_1"]) <= 1
    assert by_name["grey.png"]["note"] == "grey file converted to RGB"
    assert "red " in result.stdout and "%" in result.stdout  # the table's "red 99.9%"
    with Image.open(out / "predictions.png") as picture:
        assert picture.mode == "RGB" and picture.width > 3 * 16


def test_knn_shows_its_votes_and_nearest_training_images(trained):
    result = predict(
        trained["knn"], trained["asked"] / "big_red.jpg", trained["asked"] / "blue.webp", cwd=trained["base"]
    )
    assert result.returncode == 0, result.stderr
    table = rows(trained["knn"] / "predictions.csv")  # default: next to the checkpoint
    assert table[0]["predicted"] == "red" and table[0]["votes"] == "red 3" and float(table[0]["probability"]) == 1.0
    neighbours = table[1]["nearest_training_images"].split()
    assert len(neighbours) == 8 and all(n.split(":")[1] == "blue" for n in neighbours[:3])
    assert "votes" in result.stdout and (trained["knn"] / "predictions.png").is_file()


def test_an_rgb_file_into_a_grey_model_is_converted_and_said(tmp_path):
    write_idx_dataset(tmp_path / "data" / "FashionMNIST" / "raw", train=60, test=20)
    run_dir = tmp_path / "run"
    result = run_cli(
        ["dataset=fashion_mnist", f"dataset.root={tmp_path / 'data'}", "dataset.download=false", *FAST], run_dir
    )
    assert result.returncode == 0, result.stderr
    Image.fromarray(np.full((28, 28, 3), (250, 10, 10), np.uint8)).save(tmp_path / "colour.png")
    result = predict(run_dir, tmp_path / "colour.png", "--out", tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "colour.png: RGB file converted to grey (the model takes 1x28x28 images)" in result.stdout
    (row,) = rows(tmp_path / "predictions.csv")
    assert row["predicted"] in FashionMNIST.classes


@pytest.fixture(scope="module")
def bad(trained) -> dict[str, Path]:
    base = trained["base"] / "bad"
    base.mkdir()
    truncated = base / "truncated.jpg"
    data = (trained["asked"] / "big_red.jpg").read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    not_checkpoint = base / "not_a_checkpoint.pt"
    not_checkpoint.write_text("hello")
    empty = base / "empty_folder"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    return {
        "truncated": truncated,
        "not_checkpoint": not_checkpoint,
        "empty": empty,
        "linear": trained["linear"],
        "asked": trained["asked"],
    }


# (id, arguments, expected words in the one error line); the new vl-predict cases of the bad-input catalogue.
CASES = [
    ("image-missing", ["{linear}", "/nowhere/cat.jpg"], ["/nowhere/cat.jpg does not exist"]),
    ("image-truncated", ["{linear}", "{truncated}"], ["truncated.jpg could not be read as an image"]),
    ("folder-without-images", ["{linear}", "{empty}"], ["holds no image files"]),
    (
        "not-a-checkpoint",
        ["{not_checkpoint}", "{asked}"],
        ["not_a_checkpoint.pt is corrupt or not a visionlab checkpoint"],
    ),
    ("checkpoint-missing", ["/nowhere/last.pt", "{asked}"], ["/nowhere/last.pt does not exist"]),
    ("top-k", ["{linear}", "{asked}", "--top-k", "0"], ["--top-k=0", "at least 1"]),
    ("bad-override", ["{linear}", "{asked}", "trainer.device=tpu"], ["trainer.device='tpu'"]),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_predict_input_exits_2_with_one_line(tmp_path, bad, args, expected):
    result = predict(*[a.format(**bad) for a in args], cwd=tmp_path)
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
