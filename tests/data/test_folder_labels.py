"""`dataset=folder` on flat folders: labels from a CSV (`dataset.labels`) or from the file names (`label_pattern`).

The same noisy colour patches are written three ways with Pillow: in class folders, flat with a CSV, and flat
with the class's number at the front of each name; every way must give the same images, labels and test split,
and a run on any of them the same test accuracy.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.cli.test_predict import predict, rows
from tests.conftest import read_metrics, run_cli, run_tool, vl_train
from tests.data.test_folder import FAST
from visionlab.data.folder import ImageFolder
from visionlab.data.labels import classes_of, read_labels_file
from visionlab.errors import UserError

COLOURS = {"blue": (60, 80, 170), "green": (60, 160, 80), "red": (170, 70, 60)}  # near enough to confuse a few
PER_CLASS = 10
PATTERN = r"^(\d+)\."  # the course's CustomDataset: int(f.split(".")[0])


def patch(colour: tuple[int, int, int], rng: np.random.Generator) -> Image.Image:
    return Image.fromarray((np.array(colour) + rng.integers(-60, 61, (8, 8, 3))).clip(0, 255).astype(np.uint8))


def write_three_ways(base: Path) -> dict[str, Path]:
    """The same images as class folders, flat with a CSV (headers as a download might have them), and flat with
    each label a number in front of the name."""
    roots = {way: base / way for way in ("classes", "csv", "numbered")}
    rng = np.random.default_rng(0)
    lines = ["Image_ID;Notes;Category"]  # semicolons, another column, headers in another case
    for number, (name, colour) in enumerate(COLOURS.items()):
        for i in range(PER_CLASS):
            image = patch(colour, rng)
            for path in (
                roots["classes"] / name / f"{i:03d}.png",
                roots["csv"] / f"{name}_{i:03d}.png",
                roots["numbered"] / f"{number}.{i:03d}.png",
            ):
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path)
            lines.append(f"{name}_{i:03d};seen twice;{name}")  # no extension: found by stem
    (roots["csv"] / "labels.csv").write_text("\ufeff" + "\n".join(lines) + "\n")  # with Excel's byte order mark
    return roots


@pytest.fixture(scope="module")
def three_ways(tmp_path_factory) -> dict[str, Path]:
    return write_three_ways(tmp_path_factory.mktemp("three_ways"))


def test_a_csv_and_a_pattern_label_the_images_as_class_folders_do(three_ways):
    by_folders = ImageFolder(root=str(three_ways["classes"])).load()
    by_csv = ImageFolder(root=str(three_ways["csv"]), labels="labels.csv").load()
    by_name = ImageFolder(root=str(three_ways["csv"]), label_pattern=r"^(?P<label>[a-z]+)_").load()
    by_number = ImageFolder(root=str(three_ways["numbered"]), label_pattern=PATTERN).load()
    assert by_folders.classes == by_csv.classes == by_name.classes == list(COLOURS)
    assert by_number.classes == ["0", "1", "2"]
    for other in (by_csv, by_name, by_number):  # the same images in the same order: the same test draw
        for mine, theirs in ((by_folders.train, other.train), (by_folders.test, other.test)):
            assert torch.equal(mine.images, theirs.images) and torch.equal(mine.labels, theirs.labels)
    assert len(by_csv.test) == 6 and torch.bincount(by_csv.test.labels).tolist() == [2, 2, 2]
    assert by_csv.files.names[-1] == "labels.csv"  # fingerprinted with the images


def test_a_run_on_a_csv_labelled_folder_scores_evaluates_and_predicts_as_on_class_folders(tmp_path, three_ways):
    runs = {way: tmp_path / way for way in ("classes", "csv", "numbered")}
    labelled = {"classes": [], "csv": ["dataset.labels=labels.csv"], "numbered": [f"dataset.label_pattern='{PATTERN}'"]}
    for way, run_dir in runs.items():
        result = run_cli(["dataset=folder", f"dataset.root={three_ways[way]}", *labelled[way], *FAST], run_dir)
        assert result.returncode == 0, result.stderr
    accuracy = {way: read_metrics(run_dir)["test/acc"] for way, run_dir in runs.items()}
    assert len(set(accuracy.values())) == 1 and 0.5 < accuracy["csv"], accuracy

    done = run_tool("vl-eval", [runs["csv"]], tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads((runs["csv"] / "eval_last_test.json").read_text())
    assert report["classes"] == list(COLOURS) and report["test/acc"] == accuracy["csv"]

    asked = tmp_path / "asked.png"
    Image.fromarray(np.full((8, 8, 3), COLOURS["green"], np.uint8)).save(asked)
    answered = predict(runs["csv"], asked, "--out", tmp_path / "predicted", cwd=tmp_path)
    assert answered.returncode == 0, answered.stderr
    assert rows(tmp_path / "predicted" / "predictions.csv")[0]["predicted"] == "green"


def test_a_split_column_or_train_and_test_folders_are_the_split(tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(1)
    lines = ["file,label,split"]
    for name, colour in COLOURS.items():
        for i in range(4):
            patch(colour, rng).save(flat / f"{name}{i}.png")
            lines.append(f"{name}{i}.png,{name},{'Test' if i == 0 else 'train'}")
    (flat / "labels.csv").write_text("\n".join(lines) + "\n")
    raw = ImageFolder(root=str(flat), labels=str(flat / "labels.csv")).load()  # an absolute path, too
    assert len(raw.train) == 9 and torch.bincount(raw.test.labels).tolist() == [1, 1, 1]

    given = tmp_path / "given"
    for part, count in (("train", 3), ("test", 1)):
        (given / part).mkdir(parents=True)
        for number, colour in enumerate(COLOURS.values()):
            for i in range(count):
                patch(colour, rng).save(given / part / f"{number}.{i}.png")
    raw = ImageFolder(root=str(given), label_pattern=PATTERN).load()
    assert raw.classes == ["0", "1", "2"] and len(raw.train) == 9 and len(raw.test) == 3
    assert not list(given.rglob("test-split-*.json"))  # nothing drawn, nothing recorded


def test_a_changed_csv_is_read_with_its_new_labels_and_a_new_cache(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    rng = np.random.default_rng(2)
    names = [f"{i:02d}.png" for i in range(12)]
    for i, name in enumerate(names):
        patch(list(COLOURS.values())[i % 2], rng).save(root / name)
    csv = root / "labels.csv"
    csv.write_text("filename,label\n" + "".join(f"{name},{'ab'[i % 2]}\n" for i, name in enumerate(names)))
    before = ImageFolder(root=str(root), labels="labels.csv").load()
    csv.write_text("filename,label\n" + "".join(f"{name},{'ba'[i % 2]}\n" for i, name in enumerate(names)))
    after = ImageFolder(root=str(root), labels="labels.csv").load()
    assert label_of_each_file(after) == {name: 1 - label for name, label in label_of_each_file(before).items()}
    assert set(before.files.names[len(before.train) :]) == set(after.files.names[len(after.train) :])  # test: kept
    assert len(list((root / ".visionlab").glob("folder-all-*.u8"))) == 2


def label_of_each_file(raw) -> dict[str, int]:
    """`RawData.files` names the images in their order, train then test, and then the labels file."""
    return dict(zip(raw.files.names, torch.cat([raw.train.labels, raw.test.labels]).tolist()))


def test_files_the_labels_miss_are_left_out_with_a_warning_when_asked(tmp_path, caplog):
    root = tmp_path / "flat"
    root.mkdir()
    rng = np.random.default_rng(3)
    for name, colour in COLOURS.items():
        for i in range(5):
            patch(colour, rng).save(root / f"{name}_{i}.png")
    listed = [f"{name}_{i}.png,{name}" for name in COLOURS for i in range(4)]  # each _4 unlisted
    (root / "labels.csv").write_text("file,class\n" + "\n".join([*listed, "gone.png,red"]) + "\n")
    with caplog.at_level(logging.WARNING, logger="visionlab"):
        raw = ImageFolder(root=str(root), labels="labels.csv", skip_bad_files=True).load()
        by_name = ImageFolder(root=str(root), label_pattern="^(blue|red)_", skip_bad_files=True).load()
    assert len(raw.train) + len(raw.test) == 12 and by_name.classes == ["blue", "red"]
    warned = [record.getMessage() for record in caplog.records]
    assert any("leaving out 1 files listed in dataset.labels=" in line and "gone.png" in line for line in warned)
    assert any("leaving out 3 images in" in line and "not listed" in line and "blue_4.png" in line for line in warned)
    assert any("leaving out 5 images in" in line and "green_0.png" in line for line in warned)


def test_a_csv_row_that_cannot_be_used_is_named_by_its_line(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    rng = np.random.default_rng(5)
    for name in ("a", "b"):
        patch(COLOURS["red"], rng).save(root / f"{name}.png")
    refused = {
        "file,label,split\na.png,x,train\nb.png,y,val\n": "line 3: split 'val' for b.png; use train or test",
        "file,label\na.png,x\nb.png,y\na.png,x\n": "labels.csv, line 4: a.png is listed again (first on line 2)",
        "file,label\na.png,x\nb,y\nb.png,y\n": "labels.csv, line 4: b.png names b.png, as line 3 does",
        "file,label\na.png,x\nb.png,\n": "labels.csv, line 3: no label for b.png",
        "file,label\na.png,x\nb.png,x\n": "labels.csv gives one class (x): a classifier needs at least two",
    }
    for text, words in refused.items():
        (root / "labels.csv").write_text(text)
        with pytest.raises(UserError, match=re.escape(words)):
            ImageFolder(root=str(root), labels="labels.csv").load()


def test_whole_number_labels_sort_as_numbers_and_listed_names_as_paths(tmp_path):
    assert classes_of(["10", "2", "07", "7"]) == (["2", "7", "10"], {"10": 2, "2": 0, "07": 1, "7": 1})
    assert classes_of(["10", "2", "cat"])[0] == ["10", "2", "cat"]
    csv = tmp_path / "labels.tsv"
    csv.write_text("Path\tTarget\nsub\\a.png\t1\n./b.png\t0\n\n")
    listing = read_labels_file(csv)
    rows_found, missing = listing.for_files(["b.png", "c.png", "sub/a.png"])
    assert [row.label if row else None for row in rows_found] == ["0", None, "1"] and missing == []


# ---- bad input: one line, exit code 2 -------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> Path:
    """A flat folder of six images, and CSVs that are wrong in one way each."""
    root = tmp_path_factory.mktemp("broken")
    rng = np.random.default_rng(4)
    for number, (name, colour) in enumerate(list(COLOURS.items())[:2]):
        for i in range(3):
            patch(colour, rng).save(root / f"{number}.{name}{i}.png")
    every = [f"{number}.{name}{i}.png,{name}" for number, name in enumerate(list(COLOURS)[:2]) for i in range(3)]
    csvs = {
        "columns": "picture,kind\n" + "\n".join(every),
        "unlisted": "file,label\n" + "\n".join(every[:-1]),
        "missing": "file,label\n" + "\n".join([*every, "0.blue9.png,blue", "1.green7.png,green"]),
    }
    for name, text in csvs.items():
        (root / f"{name}.csv").write_text(text + "\n")
    return root


# (id, arguments, expected words in the one error line)
CASES = [
    ("labels-missing", ["dataset.labels=nowhere.csv"], ["dataset.labels=", "nowhere.csv does not exist", "a CSV"]),
    (
        "no-file-column",
        ["dataset.labels=columns.csv"],
        ["columns.csv has no file column", "(picture, kind)", "filename", "image_id"],
    ),
    (
        "unlisted-image",
        ["dataset.labels=unlisted.csv"],
        ["1 images in", "not listed in dataset.labels=", "1.green2.png", "dataset.skip_bad_files=true"],
    ),
    (
        "listed-file-missing",
        ["dataset.labels=missing.csv"],
        ["2 files listed in dataset.labels=", "but not found in", "0.blue9.png, 1.green7.png"],
    ),
    (
        "pattern-unmatched",
        [r"dataset.label_pattern='^\d+\.(blue)'"],
        ["3 images in", "whose names dataset.label_pattern='^\\d+\\.(blue)' does not match", "1.green0.png"],
    ),
    (
        "pattern-not-a-regex",
        [r"dataset.label_pattern='^(\d+'"],
        ["dataset.label_pattern='^(\\d+' is invalid (missing ), unterminated subpattern", "a regular expression"],
    ),
    (
        "pattern-without-group",
        [r"dataset.label_pattern='^\d+'"],
        ["dataset.label_pattern='^\\d+' is invalid (it has no group)", "the group named label", "or null"],
    ),
    (
        "labels-and-pattern",
        ["dataset.labels=unlisted.csv", r"dataset.label_pattern='^(\d+)'"],
        ["dataset.labels and dataset.label_pattern are both set", "set the other to null"],
    ),
]


@pytest.mark.parametrize("args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_labels_exit_2_with_one_line(tmp_path, broken, args, expected):
    result = vl_train(
        [
            "dataset=folder",
            f"dataset.root={broken}",
            *args,
            "trainer.device=cpu",
            f"hydra.run.dir={tmp_path}/r",
        ],
        tmp_path,
        timeout=120,
    )
    assert result.returncode == 2, (result.returncode, result.stdout[-2000:], result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    for words in expected:
        assert words in lines[0], f"{words!r} not in {lines[0]!r}"
