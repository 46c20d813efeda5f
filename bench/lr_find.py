"""The learning-rate range test on the default CNN: what it costs against a one-epoch MNIST run, and what its lr gives.

    .venv/bin/python bench/lr_find.py            # MNIST, model=cnn: the range test,
                                                 # then one epoch at the default lr and at the suggested one
    .venv/bin/python bench/lr_find.py --quick    # 600 images, a 10-step range test, pictures off: a smoke run

Three launches of `vl-train dataset=mnist model=cnn` from the same seed: `lr_find=true` (its
`lr_find.json` gives the suggested lr and the range test's `seconds`), the default run stopped after
its first epoch (the recipe's budget trains up to 10; its first is this run step for step), and the
same run with `optimizer.lr` set to the suggestion. Both runs' `seconds` (in lr_find.json
and metrics.json) count from the same point, after the config is built: data loading, the steps
and, for the training runs, validation and the test pass, so the cost ratio is about the work each
does, not about Python's start-up (timed too, launch to exit, and shown beside it).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from common import FIRST_EPOCH, VL_TRAIN, Row, main, mnist_root, parser


def launch(overrides: list[str], run_dir: Path, result: str) -> tuple[float, dict]:
    """(seconds from launch to exit, the run's `result` JSON) of one vl-train."""
    started = time.perf_counter()
    subprocess.run(
        [str(VL_TRAIN), *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, json.loads((run_dir / result).read_text())


def rows(args) -> list[Row]:
    root = mnist_root(args.mnist)
    job = [
        "dataset=mnist",
        f"dataset.root={root}",
        "model=cnn",
        *(["dataset.train_size=600", "dataset.test_size=200", "logging=none"] if args.quick else []),
        *FIRST_EPOCH,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        find_s, found = launch(
            [*job, "lr_find=true", *(["lr_range.steps=10"] if args.quick else [])],
            Path(tmp) / "lr_find",
            "lr_find.json",
        )
        epoch_s, default = launch(job, Path(tmp) / "default", "metrics.json")
        suggested = float(f"{found['suggested_lr']:.2g}")  # as the log tells the user to type it
        _, tuned = launch([*job, f"optimizer.lr={suggested}"], Path(tmp) / "suggested", "metrics.json")
    return [
        Row(
            "lr_find: the range test on the default CNN against a one-epoch MNIST run, run seconds (launch to exit)",
            f"{found['seconds']:.2f} ({find_s:.1f}; {found['steps']} steps)",
            f"{default['seconds']:.2f} ({epoch_s:.1f}; {default['steps']} steps)",
            f"{100 * found['seconds'] / default['seconds']:.1f}% of the run",
        ),
        Row(
            "lr_find: one epoch at the suggested lr against the default lr, test/acc",
            f"{100 * tuned['test/acc']:.2f}% (optimizer.lr={suggested:g})",
            f"{100 * default['test/acc']:.2f}% (the recipe's lr 0.01)",
            f"{100 * (tuned['test/acc'] - default['test/acc']):+.2f} points",
        ),
    ]


if __name__ == "__main__":
    main("lr_find", rows, parser(__doc__).parse_args())
