"""Every benchmark, one after the other, then all their rows in one table: what `make bench` runs.

    .venv/bin/python bench/run_all.py                      # everything (2 hours or more on 2 cores)
    .venv/bin/python bench/run_all.py --quick              # each script's smoke run (what the tests run)
    .venv/bin/python bench/run_all.py --only startup,memory

Each script runs in its own process, alone (their timings would disturb each other), with its own
output shown as it goes. A script that fails leaves a row saying so, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import CIFAR_ROOT, MNIST_ROOT, Row, load, machine, table

BENCH = Path(__file__).resolve().parent
SCRIPTS = [
    "mnist_time_to_accuracy",
    "throughput",
    "allocator",
    "startup",
    "memory",
    "knn_mnist",
    "folder_decode",
    "pruned_search",
    "pictures_overhead",
    "lr_find",
    "recipe_budget",
    "folder_runs",
    "many_runs",
    "cifar10_fast",
    "airbench94_cpu",
    "photos",
    "features_network",
    "processes",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every script's --quick smoke run")
    parser.add_argument("--only", default=",".join(SCRIPTS), help=f"comma-separated, of: {', '.join(SCRIPTS)}")
    parser.add_argument("--mnist", type=Path, default=MNIST_ROOT, help="the folder holding MNIST/raw/")
    parser.add_argument("--cifar", type=Path, default=CIFAR_ROOT, help="the folder holding cifar-10-batches-py/")
    args = parser.parse_args()
    names = args.only.split(",")
    unknown = sorted(set(names) - set(SCRIPTS))
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; use some of {', '.join(SCRIPTS)}")

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    before = load()
    rows, failed = [], False
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            out = Path(tmp) / f"{name}.json"
            command = [
                sys.executable,
                str(BENCH / f"{name}.py"),
                "--json",
                str(out),
                "--mnist",
                str(args.mnist),
                "--cifar",
                str(args.cifar),
            ]
            print(f"\n==> bench/{name}.py{' --quick' * args.quick}", flush=True)
            began = time.perf_counter()
            done = subprocess.run(command + ["--quick"] * args.quick)
            print(f"<== bench/{name}.py: {time.perf_counter() - began:.0f} s", flush=True)
            if done.returncode == 0:
                rows += [Row(**row) for row in json.loads(out.read_text())]
            else:
                failed = True
                rows.append(Row(name, f"failed (exit code {done.returncode}): see its output above", "", ""))
    print(f"\n## all benchmarks{' (--quick: smoke runs, not measurements)' if args.quick else ''}\n")
    print(f"{started}; machine: {machine()}\n{before} at the start, {load()} at the end\n")
    print(table(rows), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
