"""Whole runs from a folder of JPEGs against `dataset=cifar10` built from the same JPEGs: time, peak memory,
test accuracy.

    .venv/bin/python bench/folder_runs.py                     # 10-epoch CNN runs in 2 rounds;
                                                              # CNN and kNN accuracy over seeds 0-2
    .venv/bin/python bench/folder_runs.py --rounds 1 --seeds 0
    .venv/bin/python bench/folder_runs.py --quick             # 1 epoch on 500 images, one seed, kNN's accuracy only,
                                                              # no pictures: a smoke run

`vl-train dataset=folder dataset.root=TREE` against `vl-train dataset=cifar10 dataset.root=CIFAR`
(the pickled layout `../shared/tools/cifar10-from-jpeg` rebuilds from the same JPEG tree), same
seed, `trainer.device=cpu`, each in a fresh process; time is metrics.json's `seconds` (from the
built config to the end: the data's loading, which is what differs, training and test), peak
memory the process's RSS from `wait4`. The folder's cache is made before the first timed run, so every folder run reads
it (what every run after the first does), while each cifar10 run unpickles its batches (what it always
does). The folder runs get cifar10's augmentation (random crops with 4 pixels of padding and
flips; a folder's default is none), so the two do the same work per epoch.

- Time and memory: `model=cnn trainer.epochs=--epochs`, alternating folder and cifar10 for
  `--rounds` rounds, so a burst of load from elsewhere hits both.
- Accuracy: `model=cnn` (the recipe's first epoch alone, FIRST_EPOCH) and `model=knn` (k=1, L2) for each of `--seeds`.
  The two datasets hold the same images in different orders, so a seed carves a different validation split
  from each: the spread over seeds is the noise the difference is measured against.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from common import FIRST_EPOCH, REPO, VL_TRAIN, Row, cifar_root, main, parser
from folder_decode import subset, unpacked

AUGMENT = ["dataset.augment.crop_padding=4", "dataset.augment.flip=true"]
QUICK_FILES = 800  # --quick: a tree of links to this many of the JPEGs, and as many cifar10 images
QUICK = ["dataset.train_size=500", "dataset.test_size=100", "logging=none"]  # no pictures: the rows need none
MIB = 2**20


def launch(overrides: list[str], run_dir: Path) -> dict:
    """One vl-train: its metrics.json (if it trained; its `seconds` count from the built config to the end,
    data loading included) and the peak RSS in bytes (`rss`)."""
    process = subprocess.Popen(
        [str(VL_TRAIN), *overrides, "trainer.device=cpu", "logging.neighbours=false", f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise RuntimeError(f"vl-train {' '.join(overrides)} failed: see {run_dir / 'train.log'}")
    metrics = run_dir / "metrics.json"
    return {**(json.loads(metrics.read_text()) if metrics.exists() else {}), "rss": usage.ru_maxrss * 1024}


def sources(tree: Path, cifar: Path, cache: Path) -> dict[str, list[str]]:
    return {
        "folder": ["dataset=folder", f"dataset.root={tree}", f"dataset.cache_dir={cache}", *AUGMENT],
        "cifar10": ["dataset=cifar10", f"dataset.root={cifar}"],
    }


def time_rows(data: dict[str, list[str]], args, scratch: Path) -> list[Row]:
    job = [
        "model=cnn",
        f"trainer.epochs={args.epochs}",
        "trainer.early_stopping.patience=null",
        *(QUICK if args.quick else []),
    ]
    runs: dict[str, list[dict]] = {"folder": [], "cifar10": []}
    for round_ in range(args.rounds):
        for name in ("folder", "cifar10") if round_ % 2 == 0 else ("cifar10", "folder"):
            runs[name].append(launch([*data[name], *job], scratch / f"time-{name}-{round_}"))
    seconds = {name: [run["seconds"] for run in done] for name, done in runs.items()}
    rss = {name: max(run["rss"] for run in done) for name, done in runs.items()}
    ratios = [f / c for f, c in zip(seconds["folder"], seconds["cifar10"])]
    what = f"model=cnn, {args.epochs} epoch{'s' * (args.epochs > 1)}{', --quick' if args.quick else ''}"
    return [
        Row(
            f"folder runs: {what}, run seconds (metrics.json), s (rounds: {args.rounds})",
            ", ".join(f"{s:.1f}" for s in seconds["folder"]),
            ", ".join(f"{s:.1f}" for s in seconds["cifar10"]) + " (dataset=cifar10)",
            f"{statistics.median(ratios):.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)})",
        ),
        Row(
            f"folder runs: {what}, peak RSS, MiB",
            f"{rss['folder'] / MIB:,.0f}",
            f"{rss['cifar10'] / MIB:,.0f} (dataset=cifar10)",
            f"{(rss['folder'] - rss['cifar10']) / MIB:+,.0f} MiB",
        ),
    ]


def accuracy_rows(data: dict[str, list[str]], args, scratch: Path) -> list[Row]:
    rows = []
    for model in ("knn",) if args.quick else ("cnn", "knn"):  # --quick: the time rows' runs were the CNN's
        acc: dict[str, list[float]] = {"folder": [], "cifar10": []}
        for seed in args.seeds:
            for name in acc:
                one_epoch = FIRST_EPOCH if model == "cnn" else []
                run = launch(
                    [*data[name], f"model={model}", *one_epoch, f"seed={seed}", *(QUICK if args.quick else [])],
                    scratch / f"acc-{model}-{name}-{seed}",
                )
                acc[name].append(100 * run["test/acc"])

        def shown(values: list[float]) -> str:
            spread = f", range {min(values):.2f}-{max(values):.2f}" if len(values) > 1 else ""
            return f"{statistics.mean(values):.2f}% ({', '.join(f'{v:.2f}' for v in values)}{spread})"

        difference = statistics.mean(acc["folder"]) - statistics.mean(acc["cifar10"])
        rows.append(
            Row(
                f"folder runs: model={model} test/acc, seeds "
                f"{','.join(map(str, args.seeds))}{' (--quick)' * args.quick}",
                shown(acc["folder"]),
                shown(acc["cifar10"]) + " (dataset=cifar10)",
                f"{difference:+.2f} points",
            )
        )
    return rows


def rows(args) -> list[Row]:
    if args.quick:
        args.epochs, args.rounds, args.seeds = 1, 1, [0]
    cifar = cifar_root(args.cifar)
    tree = unpacked(args.tree)
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        if args.quick:
            tree = subset(tree, QUICK_FILES, scratch / "small")
        data = sources(tree, cifar, scratch / "cache")
        if not args.quick:  # a smoke run's first folder run makes the cache
            launch([*data["folder"], "summary_only=true"], scratch / "fill-the-cache")
        return time_rows(data, args, scratch) + accuracy_rows(data, args, scratch)


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--tree",
        type=Path,
        default=REPO / ".cache" / "cifar10-jpeg",
        help="the CIFAR-10 JPEG tree (unpacked there if absent)",
    )
    arguments.add_argument("--epochs", type=int, default=10, help="epochs of the timed runs (default 10)")
    arguments.add_argument(
        "--rounds", type=int, default=2, help="rounds of folder and cifar10 runs for time and memory (default 2)"
    )
    arguments.add_argument(
        "--seeds",
        type=lambda text: [int(s) for s in text.split(",")],
        default=[0, 1, 2],
        help="seeds of the accuracy runs (default 0,1,2)",
    )
    main("folder runs", rows, arguments.parse_args())
