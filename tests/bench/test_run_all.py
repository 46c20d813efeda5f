"""`make bench`'s runner: the scripts it is given, one after the other, then all their rows in one table with the
machine (two scripts here, whose rows are checked from that table); and a benchmark whose data is missing skips with
its reason instead of failing."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.quick import BENCH, Rows
from tests.conftest import REPO

THROUGH_RUN_ALL = ["throughput", "airbench94_cpu"]


@pytest.fixture(scope="module")
def run_all(shared_data: Path, cifar_root: Path) -> tuple[str, Rows]:
    """`bench/run_all.py --quick` on THROUGH_RUN_ALL: its output, and the rows of its final table."""
    done = subprocess.run(
        [sys.executable, BENCH / "run_all.py", "--quick", "--only", ",".join(THROUGH_RUN_ALL)]
        + ["--mnist", shared_data, "--cifar", cifar_root],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    final = done.stdout.rsplit("## all benchmarks", 1)[1]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in final.splitlines() if line.startswith("| ")]
    return done.stdout, Rows({row[0]: row[1:] for row in cells[1:]})  # without the header


def test_every_script_run_all_runs_has_a_test_of_its_rows():
    """run_all's SCRIPTS, each one's smoke run checked in tests/bench/ (bench/'s other files are helpers)."""
    module = ast.parse((BENCH / "run_all.py").read_text())
    (listed,) = [node.value for node in module.body if isinstance(node, ast.Assign) and node.targets[0].id == "SCRIPTS"]
    checked = "".join(path.read_text() for path in (REPO / "tests" / "bench").glob("test_*.py"))
    scripts = ast.literal_eval(listed)
    missing = [
        script for script in scripts if f'quick_rows("{script}"' not in checked and script not in THROUGH_RUN_ALL
    ]
    assert len(scripts) == 18 and missing == []


@pytest.mark.slow
def test_run_all_puts_the_rows_of_the_scripts_it_runs_in_one_table_with_the_machine(run_all):
    stdout, rows = run_all
    assert [f"<== bench/{script}.py" in stdout for script in THROUGH_RUN_ALL] == [True, True]
    final = stdout.rsplit("## all benchmarks", 1)[1]
    assert "machine: " in final and "torch " in final and "device " in final
    assert not [name for name, cells in rows.items() if cells[0].startswith(("failed", "skipped"))]


@pytest.mark.slow
def test_throughput_and_fast_paths(run_all):
    _, rows = run_all
    for model in ("MNIST linear", "MNIST mlp", "MNIST cnn", "CIFAR-10 cnn"):
        ours, baseline, ratio = rows.row(rf"^throughput: {model}, training samples/s")
        assert (
            re.fullmatch(r"[\d,]+", ours)
            and re.match(r"[\d,]+ \(DataLoader\)", baseline)
            and re.fullmatch(r"\d+\.\dx", ratio)
        )
        ours, baseline, _ = rows.row(rf"^throughput: {model}, data path's share")
        assert re.fullmatch(r"\d+\.\d%", ours) and re.match(r"\d+\.\d% \(DataLoader\)", baseline)
    for setting in ("trainer.precision=bf16", "trainer.channels_last=false"):
        assert re.fullmatch(r"\d+\.\d\dx", rows.row(rf"^fast path: .*{re.escape(setting)}")[2])


@pytest.mark.slow
def test_airbench94_ported_to_the_cpu(run_all):
    _, rows = run_all
    ours, baseline, points = rows.row(r"^airbench94 on the CPU \(.*\) --quick: test accuracy with TTA, mean \(range\)")
    assert re.fullmatch(r"\d+\.\d\d% \(\d+\.\d\d%-\d+\.\d\d%\)", ours) and baseline.startswith("94.01%")
    assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, _ = rows.row(r"^airbench94 on the CPU \(.*\) --quick: seconds airbench times")
    assert re.fullmatch(r"\d+", ours) and baseline.endswith("(A100)")


def test_missing_data_skips_a_benchmark_with_its_reason(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, BENCH / "startup.py", "--quick", "--mnist", tmp_path / "nowhere", "--json", out],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())
    assert row["benchmark"] == "start-up"
    assert (
        row["ours"].startswith("skipped: MNIST not found")
        and str(tmp_path / "nowhere" / "MNIST" / "raw") in row["ours"]
    )
    assert "skipped: MNIST not found" in done.stderr
