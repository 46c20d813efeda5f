"""What every benchmark shares: where the data is, the machine, and the one table they all print.

A benchmark script turns its measurements into `Row`s (benchmark, ours, the baseline's figure from
the same run, the ratio). Run alone it prints them as a table under the machine line; with
`--json PATH` it also writes them there, for `bench/run_all.py` (`make bench`) to gather every
script's rows into one table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MNIST_ROOT = Path(os.environ.get("VL_DATA_DIR", REPO.parent / "shared" / "data"))
CIFAR_ROOT = REPO / ".cache" / "cifar10"
VL_TRAIN = Path(sys.executable).with_name("vl-train")
HEADER = ("benchmark", "ours (visionlab)", "baseline (same run)", "ratio")
# model=cnn's first epoch alone: its recipe trains up to 10 with early stopping, and its first epoch is this run
# step for step
FIRST_EPOCH = ["trainer.epochs=1", "trainer.early_stopping.patience=null"]


@dataclass
class Row:
    benchmark: str
    ours: str
    baseline: str
    ratio: str


class Skipped(Exception):
    """Data a benchmark needs is absent; the message says which and where."""


def absolute(path: str) -> Path:
    """A data folder given on the command line, made absolute: the benchmarks run vl-train from other folders."""
    return Path(path).resolve()


def mnist_root(root: Path) -> Path:
    if not (root / "MNIST" / "raw").is_dir():
        raise Skipped(f"MNIST not found: {root / 'MNIST' / 'raw'} is absent (pass --mnist or set VL_DATA_DIR)")
    return root


def cifar_root(root: Path) -> Path:
    if not (root / "cifar-10-batches-py" / "test_batch").is_file():
        raise Skipped(
            f"CIFAR-10 not found: {root / 'cifar-10-batches-py'} is absent (pass --cifar; "
            "../shared/tools/cifar10-from-jpeg builds it)"
        )
    return root


def machine() -> str:
    """CPU model, cores, torch's threads and version, the device vl-train picks, memory, Python."""
    import torch

    from visionlab.training.device import resolve_device

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    device = resolve_device("auto")
    shown_device = torch.cuda.get_device_name(device) if device.type == "cuda" else str(device)
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs, {memory:.0f} GiB; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads; device {shown_device}; Python {platform.python_version()}"
    )


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(asdict(row).values()) + " |" for row in rows]
    return "\n".join(lines)


def parser(doc: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run: small sizes, no meaningful figures")
    parser.add_argument("--json", type=Path, help="also write the rows to this file (for bench/run_all.py)")
    parser.add_argument("--mnist", type=absolute, default=MNIST_ROOT, help="the folder holding MNIST/raw/")
    parser.add_argument("--cifar", type=absolute, default=CIFAR_ROOT, help="the folder holding cifar-10-batches-py/")
    return parser


def main(name: str, make_rows: Callable[[argparse.Namespace], list[Row]], args: argparse.Namespace) -> None:
    """Run one benchmark: its table and the machine on stdout; a missing dataset becomes a 'skipped' row."""
    print(f"{name}: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()}", flush=True)
    try:
        rows = make_rows(args)
    except Skipped as exc:
        print(f"skipped: {exc}", file=sys.stderr, flush=True)
        rows = [Row(name, f"skipped: {exc}", "", "")]
    print(f"\n{table(rows)}\n\nmachine: {machine()}; {load()} at the end", flush=True)
    if args.json:
        args.json.write_text(json.dumps([asdict(row) for row in rows]))
