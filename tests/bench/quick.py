"""A benchmark's smoke run (`bench/NAME.py --quick`) and its rows, for the tests that check each benchmark runs.

Speed is what the benchmarks report, never what the suite asserts: the tests check that every script runs, that
its rows have figures in them, and that missing data skips a benchmark with a message instead of failing it. Each
module here checks a few scripts, so that the suite's workers share them (pytest-xdist hands out whole modules).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

BENCH = REPO / "bench"


class Rows(dict):
    """A benchmark's rows: the cells after the name (ours, baseline, ratio), by the row's name."""

    def row(self, pattern: str) -> list[str]:
        """The one row whose name matches `pattern`."""
        (name,) = [name for name in self if re.search(pattern, name)]
        return self[name]


def quick_rows(script: str, mnist: Path, cifar: Path, tmp_path: Path) -> Rows:
    """`bench/<script>.py --quick`'s rows, once it has exited 0 with no row failed or skipped."""
    out = tmp_path / f"{script}.json"
    done = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick", "--mnist", mnist, "--cifar", cifar, "--json", out],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = Rows({row["benchmark"]: [row["ours"], row["baseline"], row["ratio"]] for row in json.loads(out.read_text())})
    assert rows and not [name for name, cells in rows.items() if cells[0].startswith(("failed", "skipped"))], rows
    return rows
