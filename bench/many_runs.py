"""Several runs on one machine: two at once against one after the other; a joblib sweep against the same sweep serially.

    .venv/bin/python bench/many_runs.py                  # issue 38's runs: the MNIST CNN, 3 epochs; a 4-job lr sweep
    .venv/bin/python bench/many_runs.py --epochs 1 --jobs 2
    .venv/bin/python bench/many_runs.py --quick          # small synthetic runs: a smoke run, no meaningful figures

Each figure is wall time from launch to exit, every run a fresh `vl-train` process on the CPU:

- one after the other: the same run twice, each alone (the target for two at once: at most about 1.2x this);
- two at once, `trainer.threads` unset: both started together, each taking its share of the cores
  (docs/architecture.md, "Sharing the CPU cores");
- two at once, each `trainer.threads=<cores>`: what every run did before it shared the cores (oversubscribed);
- a sweep over `optimizer.lr` with `hydra/launcher=joblib hydra.launcher.n_jobs=<cores>` (threads unset)
  against the same sweep with the basic launcher, one job after the other.

The runs see only each other in the registry of runs (a private `VL_RUNS_DIR`), so another visionlab
run on the machine does not change the threads they take; the load average in the output says
whether anything else ran.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from common import VL_TRAIN, Row, main, mnist_root, parser
from visionlab.cores import allowed

LRS = ["0.001", "0.003", "0.01", "0.03", "0.0003", "0.1"]


def job(args, root: Path | None) -> list[str]:
    if args.quick:
        return [
            "dataset.train_size=600",
            "dataset.test_size=200",
            "trainer.epochs=1",
            "model=mlp",
            "trainer.device=cpu",
        ]
    return [
        "dataset=mnist",
        f"dataset.root={root}",
        "model=cnn",
        f"trainer.epochs={args.epochs}",
        "trainer.early_stopping.patience=null",
        "trainer.device=cpu",
    ]


def together(commands: list[list[str]], folders: list[Path], env: dict[str, str]) -> float:
    """Seconds from launching all of them at once until the last one exits; each one's output in FOLDER.out."""
    outputs = [open(folder.with_suffix(".out"), "w") for folder in folders]
    started = time.perf_counter()
    processes = [
        subprocess.Popen([str(VL_TRAIN), *command], cwd=folder.parent, env=env, stdout=out, stderr=subprocess.STDOUT)
        for command, folder, out in zip(commands, folders, outputs)
    ]
    codes = [process.wait() for process in processes]
    seconds = time.perf_counter() - started
    for out in outputs:
        out.close()
    for code, folder in zip(codes, folders):
        if code:
            tail = folder.with_suffix(".out").read_text().splitlines()[-5:]
            raise RuntimeError(f"vl-train failed (exit {code}): " + " / ".join(tail))
    return seconds


def rows(args) -> list[Row]:
    root = None if args.quick else mnist_root(args.mnist)
    with tempfile.TemporaryDirectory(prefix="many_runs-") as folder:
        return timed(args, job(args, root), Path(folder))


def timed(args, run: list[str], scratch: Path) -> list[Row]:
    cores = allowed().cores
    env = {**os.environ, "VL_RUNS_DIR": str(scratch / "registry")}

    def runs(name: str, extra: list[str], count: int = 2) -> tuple[list[list[str]], list[Path]]:
        folders = [scratch / f"{name}-{i}" for i in range(count)]
        return [[*run, *extra, f"seed={i}", f"hydra.run.dir={folder}"] for i, folder in enumerate(folders)], folders

    commands, folders = runs("serial", [])
    alone = [together([command], [folder], env) for command, folder in zip(commands, folders)]
    serial = sum(alone)
    shared = together(*runs("shared", []), env)
    fixed = together(*runs("fixed", [f"trainer.threads={cores}"]), env)

    jobs = 2 if args.quick else args.jobs
    lrs = ",".join(LRS[:jobs])
    sweep = ["-m", *run, f"optimizer.lr={lrs}"]
    basic = together([[*sweep, f"hydra.sweep.dir={scratch / 'basic'}"]], [scratch / "basic"], env)
    joblib = [
        *sweep,
        "hydra/launcher=joblib",
        f"hydra.launcher.n_jobs={cores}",
        f"hydra.sweep.dir={scratch / 'joblib'}",
    ]
    parallel = together([joblib], [scratch / "joblib"], env)
    what = "--quick: mlp, 1 epoch on 600 synthetic images" if args.quick else f"MNIST cnn, {args.epochs} epochs"
    one_after = f"{serial:.1f} (one after the other: {alone[0]:.1f} + {alone[1]:.1f})"
    return [
        Row(
            f"many runs: two at once, trainer.threads unset ({what}, {cores} cores), wall s",
            f"{shared:.1f}",
            one_after,
            f"{shared / serial:.2f}x the serial time",
        ),
        Row(
            f"many runs: two at once, each trainer.threads={cores} ({what}), wall s",
            f"{fixed:.1f}",
            one_after,
            f"{fixed / serial:.2f}x the serial time",
        ),
        Row(
            f"many runs: a {jobs}-job optimizer.lr sweep, hydra/launcher=joblib n_jobs={cores} ({what}), wall s",
            f"{parallel:.1f}",
            f"{basic:.1f} (the basic launcher: one job after the other)",
            f"{parallel / basic:.2f}x the serial time",
        ),
    ]


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--epochs", type=int, default=3, help="epochs of each run (not with --quick)")
    arguments.add_argument(
        "--jobs",
        type=int,
        default=4,
        choices=range(2, len(LRS) + 1),
        metavar=f"2..{len(LRS)}",
        help="jobs of the sweep (--quick: 2)",
    )
    main("many runs", rows, arguments.parse_args())
