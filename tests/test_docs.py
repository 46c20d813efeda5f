"""The docs stay true: every option of conf/ with its real default, every link and cited section there,
every figure measured.

docs/configs.md's tables are compared with the composed config itself; a relative link or a `FILE.md, "Section"`
citation in a page, a conf/ comment or the code must lead to a file and heading that exist; a measured figure in
README.md or docs/ (a percentage, a time, a speed-up, a size) must cite the BENCHMARKS.md section it was measured in
and that section must hold the number, or, for a limit or a setting, name the file that sets it
(docs/testing.md, "The docs").
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR, REPO, compose_train

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
CITING = [
    *PAGES,
    REPO / "BENCHMARKS.md",
    *sorted(CONF_DIR.rglob("*.yaml")),
    *sorted((REPO / "src").rglob("*.py")),
    *sorted((REPO / "bench").glob("*.py")),
]
GROUPS = [
    "dataset",
    "split",
    "features",
    "model",
    "loss",
    "regularization",
    "optimizer",
    "scheduler",
    "trainer",
    "logging",
]
NAMED = ["experiment", "hparams_search"]  # groups of whole setups: each option is listed, its keys are other groups'
TOP_LEVEL = ["seed", "objective", "resume", "summary_only", "lr_find", "lr_range"]
CITATION = re.compile(r'\b((?:docs/)?[\w-]+\.md|README)[,:]? "([^"]+)"')
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# a figure set there, not measured
SETTING = re.compile(r"\b((?:bench|conf|src|tests)/[\w/.+-]+\.(?:py|yaml)|pyproject\.toml)")
FIGURE = re.compile(
    r"(?<![\w.`=/-])(\d+(?:[.,]\d+)*)(?:-\d+(?:\.\d+)?)? ?"
    r"(%|(?<=\d)x\b|s\b|ms\b|µs\b|minutes?\b|hours?\b|GFLOPs?\b|MB\b|GB\b)"
)


def rows(page: Path) -> dict[str, str]:
    """Each table row of `page` by its first cell (without backticks): `dataset=folder` -> the rest of the row."""
    found = {}
    for line in page.read_text().splitlines():
        if line.startswith("| `"):
            cells = line.strip("|").split("|", 1)
            found[cells[0].strip().strip("`")] = cells[1]
    return found


def leaves(node: dict, prefix: str = "") -> dict[str, object]:
    """The keys a user sets (`augment.flip`), with their values; `_target_` and friends are not options."""
    found = {}
    for key, value in node.items():
        if key.startswith("_"):
            continue
        if isinstance(value, dict) and value:
            found |= leaves(value, f"{prefix}{key}.")
        else:
            found[f"{prefix}{key}"] = value
    return found


def same(written: str, value: object) -> bool:
    """The docs' spelling of a value (YAML: null, true, [0.9, 0.999], 0.00001) means `value`."""
    try:
        read = yaml.safe_load(written)
    except yaml.YAMLError:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(read, (int, float)):
        return math.isclose(read, value, rel_tol=1e-3)
    return read == value


def documented_value(row: str, key: str) -> str | None:
    match = re.search(rf"`{re.escape(key)}` (\[[^\]]*\]|[^\s,;()]+)", row)
    return match[1].rstrip(".") if match else None


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def composed(overrides: list[str]) -> dict:
    return OmegaConf.to_container(compose_train(overrides), resolve=True)


@pytest.fixture(autouse=True)
def default_data_dir(monkeypatch):
    monkeypatch.delenv("VL_DATA_DIR", raising=False)  # dataset.root's default is then the one the docs give


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_a_group_is_in_configs_md_with_its_real_defaults(group):
    table = rows(REPO / "docs" / "configs.md")
    wrong = []
    for option in options(group):
        row = table.get(f"{group}={option}")
        if row is None:
            wrong.append(f"{group}={option}: no row")
            continue
        own = leaves(composed([f"{group}={option}", "recipe=none"])[group])
        with_recipe = leaves(composed([f"{group}={option}"])[group])  # the default model's recipe, where it has one
        for key, value in own.items():
            written = documented_value(row, key)
            if written is None or not same(written, value):
                wrong.append(f"{group}={option}: `{key}` {value} (the docs: {written})")
            elif with_recipe[key] != value and not re.search(rf"`{re.escape(key)}` \S+ \(recipe: ([^)]+)\)", row):
                wrong.append(
                    f"{group}={option}: `{key}` is {with_recipe[key]} with model=cnn's recipe: say (recipe: ...)"
                )
            elif with_recipe[key] != value:
                recipe = re.search(rf"`{re.escape(key)}` \S+ \(recipe: ([^)]+)\)", row)[1]
                if not same(recipe, with_recipe[key]):
                    wrong.append(
                        f"{group}={option}: `{key}` with the recipe is {with_recipe[key]} (the docs: {recipe})"
                    )
    assert not wrong, "docs/configs.md does not match conf/:\n" + "\n".join(wrong)


def test_every_named_setup_and_top_level_key_is_in_configs_md():
    table = rows(REPO / "docs" / "configs.md")
    missing = [f"{group}={option}" for group in NAMED for option in options(group) if f"{group}={option}" not in table]
    top = leaves({key: composed([])[key] for key in TOP_LEVEL})
    wrong = [
        f"`{key}` {value} (the docs: {documented_value(table.get('train.yaml', ''), key)})"
        for key, value in top.items()
        if not same(documented_value(table.get("train.yaml", ""), key) or "", value)
    ]
    assert not missing and not wrong, (
        f"not in docs/configs.md: {missing}; top-level keys in its train.yaml row: {wrong}"
    )


def headings(page: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def cited_page(name: str, source: Path) -> Path:
    if name == "README":
        return REPO / "README.md"
    for base in (REPO, source.parent, REPO / "docs"):
        if (base / name).is_file():
            return base / name
    return REPO / name


def test_every_cited_section_exists():
    wrong = []
    for source in CITING:
        for number, line in enumerate(source.read_text().splitlines(), 1):
            for name, section in CITATION.findall(line):
                page = cited_page(name, source)
                if not page.is_file() or not any(h == section or h.startswith(f"{section} (") for h in headings(page)):
                    wrong.append(f'{source.relative_to(REPO)}:{number}: {name}, "{section}"')
    assert not wrong, "sections cited that do not exist:\n" + "\n".join(wrong)


def test_every_relative_link_leads_to_a_file_and_heading_that_exist():
    wrong = []
    for page in [*PAGES, REPO / "BENCHMARKS.md"]:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, fragment = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() or (fragment and fragment not in map(anchor, headings(linked))):
                wrong.append(f"{page.relative_to(REPO)}: {target}")
    assert not wrong, "links that lead nowhere:\n" + "\n".join(wrong)


def blocks(page: Path) -> list[str]:
    """Paragraphs, list items and table rows: the unit a figure and its citation share. Code blocks are not prose."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    found = []
    for paragraph in re.split(r"\n\s*\n", text):
        found += re.split(r"\n(?=\s*(?:[-*] |\d+\. |\|))", paragraph)
    return found


def benchmark_sections() -> dict[str, str]:
    """BENCHMARKS.md's text under each heading, with the text of the headings below it."""
    lines = (REPO / "BENCHMARKS.md").read_text().splitlines()
    found = {}
    for start, line in enumerate(lines):
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            end = next(
                (
                    i
                    for i in range(start + 1, len(lines))
                    if lines[i].startswith("#") and len(lines[i]) - len(lines[i].lstrip("#")) <= level
                ),
                len(lines),
            )
            found[line.lstrip("#").strip()] = "\n".join(lines[start:end])
    return found


def holds(text: str, figure: str) -> bool:
    """`figure` is a number of `text`: 13 is not in 1363, 99.2 is in 99.20, 99 is in 0.99."""
    return re.search(rf"(?<!\d){re.escape(figure)}{'0*' if '.' in figure else ''}(?!\d|,\d)", text) is not None


def test_every_figure_in_the_docs_names_the_benchmarks_md_section_that_measured_it():
    sections = benchmark_sections()
    wrong = []
    for page in PAGES:
        for block in blocks(page):
            figures = [m[1] for m in FIGURE.finditer(re.sub(r"`[^`]*`", "``", block))]  # a value in code is a setting
            if not figures:
                continue
            cited = [
                text
                for name, section in CITATION.findall(block)
                if name == "BENCHMARKS.md"
                for heading, text in sections.items()
                if heading == section or heading.startswith(f"{section} (")
            ]
            cited += [(REPO / path).read_text() for path in SETTING.findall(block) if (REPO / path).is_file()]
            unmeasured = [f for f in figures if not any(holds(text, f) for text in cited)]
            if unmeasured:
                wrong.append(
                    f'{page.relative_to(REPO)}: {", ".join(unmeasured)} in "{" ".join(block.split())[:120]}..."'
                )
    assert not wrong, "figures that name no BENCHMARKS.md section holding them:\n" + "\n".join(wrong)
