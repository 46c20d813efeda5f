r"""Labels that are not folder names, for `dataset=folder`'s flat folders (docs/datasets.md, "Your own images").

    dataset.labels=labels.csv           a CSV names each file, its label and, with a split column, its split
    dataset.label_pattern='^(\d+)\.'    a regular expression picks each label out of its file's name

A CSV's columns are found by their headers (FILE_COLUMNS, LABEL_COLUMNS, SPLIT_COLUMNS, in any case), so the
CSVs that come with downloaded datasets are read as they are, whatever else they hold; a listed name without
its extension finds its file by stem, as Kaggle's `id` columns name images. Labels are text; where every one is
a whole number, the classes sort as numbers, so labels 0 to 10 keep 10 last and labels 0..K-1 keep their own
index. Nothing here looks at the folder: folder.py hands over the names of the images it found.
"""

from __future__ import annotations

import csv
import io
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from visionlab.errors import UserError

# The headers read as each column (lower case, "-" and " " as "_"), the first present taken where a CSV has several:
# an `id` column beside an `image` column is more often a row number than a file.
FILE_COLUMNS = (
    "file",
    "filename",
    "file_name",
    "filepath",
    "file_path",
    "image",
    "image_name",
    "image_path",
    "image_id",
    "img",
    "path",
    "id",
)
LABEL_COLUMNS = ("label", "class", "class_name", "category", "target")
SPLIT_COLUMNS = ("split", "subset")
SPLITS = ("train", "test")
DELIMITERS = ",;\t"  # the one the header line holds most of; a comma where it holds none
WHOLE = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Row:
    line: int  # in the CSV, for messages
    label: str
    split: str | None  # "train" or "test"; None: the CSV has no split column


@dataclass(frozen=True)
class LabelsFile:
    """A labels CSV, read and checked: each listed name ("/"-separated, relative to the root) and its row."""

    named: str  # "dataset.labels=<path>", as messages name it
    rows: dict[str, Row]
    has_split: bool

    def for_files(self, files: list[str]) -> tuple[list[Row | None], list[str]]:
        """Each file's row (None: not listed) and the listed names no file has. A name is the file of that path,
        or else the one file whose path it is without the extension."""
        position = {name: index for index, name in enumerate(files)}
        by_stem: dict[str, int | None] = {}  # None: more than one file has that stem
        for index, name in enumerate(files):
            stem = posixpath.splitext(name)[0]
            by_stem[stem] = None if stem in by_stem else index
        rows: list[Row | None] = [None] * len(files)
        missing = []
        for name, row in self.rows.items():
            index = position.get(name, by_stem.get(name))
            if index is None:
                missing.append(name)
            elif rows[index] is not None:
                raise UserError(
                    f"{self.named}, line {row.line}: {name} names {files[index]}, as line {rows[index].line} does; "
                    "list each file once"
                )
            else:
                rows[index] = row
        return rows, missing


def read_labels_file(path: Path) -> LabelsFile:
    """The CSV at `path`, or one line naming what in it cannot be read and what would be."""
    named = f"dataset.labels={path}"
    text = _text(path, named)
    header_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=header_line.count) if any(d in header_line for d in DELIMITERS) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    file, label, split = _columns(named, next(reader, []))
    rows: dict[str, Row] = {}
    try:
        for cells in reader:
            if any(cell.strip() for cell in cells):
                name, row = _row(named, reader.line_num, cells, file, label, split)
                if name in rows:
                    raise UserError(
                        f"{named}, line {row.line}: {name} is listed again (first on line {rows[name].line}); "
                        "list each file once"
                    )
                rows[name] = row
    except csv.Error as exc:  # a NUL byte, a quote left open, a cell too long: not a CSV of names
        raise UserError(f"{named}, line {reader.line_num}: {exc}; give a CSV of file names and labels") from None
    if not rows:
        raise UserError(f"{named} lists no files: give a row per image, its file name and its label")
    return LabelsFile(named, rows, split is not None)


def _text(path: Path, named: str) -> str:
    """The whole file: a labels CSV is small beside the images it names."""
    if not path.is_file():
        raise UserError(
            f"{named} {'is not a file' if path.exists() else 'does not exist'}: give a CSV of file names and labels, "
            "its path relative to dataset.root or absolute"
        )
    try:
        return path.read_text(encoding="utf-8-sig")  # a byte order mark, as Excel writes one, is not a header
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{named} cannot be read as text ({exc}): give a CSV of file names and labels") from None


def _columns(named: str, header: list[str]) -> tuple[int, int, int | None]:
    """Which cells hold the file, the label and (None: no such column) the split, found by their headers."""
    columns = [cell.strip().lower().replace("-", "_").replace(" ", "_") for cell in header]
    file, label = _column(columns, FILE_COLUMNS), _column(columns, LABEL_COLUMNS)
    for role, index, names in (("file", file, FILE_COLUMNS), ("label", label, LABEL_COLUMNS)):
        if index is None:
            raise UserError(
                f"{named} has no {role} column: its first row ({', '.join(header) or 'empty'}) names none of "
                f"{', '.join(names)} (in any case); the first row names the columns"
            )
    return file, label, _column(columns, SPLIT_COLUMNS)


def _column(columns: list[str], names: tuple[str, ...]) -> int | None:
    """The index of the first of `names` among the CSV's columns."""
    return next((columns.index(name) for name in names if name in columns), None)


def _row(named: str, line: int, cells: list[str], file: int, label: int, split: int | None) -> tuple[str, Row]:
    """One CSV line's file name (as "/"-separated path relative to the root) and row."""

    def cell(index: int) -> str:
        return cells[index].strip() if index < len(cells) else ""

    name = posixpath.normpath(cell(file).replace("\\", "/")) if cell(file) else ""
    if not name or not cell(label):
        raise UserError(f"{named}, line {line}: no {'label for ' + name if name else 'file name'}; give every row both")
    if split is None:
        return name, Row(line, cell(label), None)
    if cell(split).lower() not in SPLITS:
        raise UserError(
            f"{named}, line {line}: split {cell(split)!r} for {name}; use train or test (validation is carved "
            "from train: split=)"
        )
    return name, Row(line, cell(label), cell(split).lower())


def labels_by_pattern(pattern: str, files: list[str]) -> list[str | None]:
    """The label in each file's name (not its folders): the group named `label`, else the first group; None where
    the pattern does not match, or that group is empty or takes no part in the match."""
    compiled = re.compile(pattern)
    group = "label" if "label" in compiled.groupindex else 1
    found = (compiled.search(posixpath.basename(name)) for name in files)
    return [(match[group] or None) if match else None for match in found]


def classes_of(labels: Iterable[str]) -> tuple[list[str], dict[str, int]]:
    """The classes (the distinct labels, sorted: as numbers where every one is a whole number, so 2 comes before
    10 and "07" is class 7), and each label's index among them."""
    distinct = set(labels)
    whole = all(WHOLE.fullmatch(label) for label in distinct)
    name = (lambda label: str(int(label))) if whole else (lambda label: label)
    classes = sorted({name(label) for label in distinct}, key=int if whole else None)
    index = {title: i for i, title in enumerate(classes)}
    return classes, {label: index[name(label)] for label in distinct}
