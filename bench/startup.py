"""Start-up: seconds from the command to the end of the first training step, `vl-train` against a bare script.

    .venv/bin/python bench/startup.py              # fastest of 5 launches each
    .venv/bin/python bench/startup.py --quick      # one launch each, vl-train on 600 images

Ours is `vl-train dataset=mnist model=cnn trainer.log_every_n_steps=1` (every default, pictures
included), the bare script `bench/bare_mnist_step.py` (import torch, read MNIST, build the same CNN,
one Adam step). Each is started in a fresh process and timed from launch until it prints the loss of
step 1, then killed. The difference is what the runner adds before training: Hydra, the run
directory and log, validation, the train/val split and its statistics, TensorBoard, the data
preview and the model graph; the second row turns those two pictures off. The third times the
imports alone: `import visionlab.cli, visionlab.experiment` (the modules every run loads)
against `import torch`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, VL_TRAIN, Row, main, mnist_root, parser

# The two pictures drawn before the first step: the data preview and the model graph.
START_PICTURES_OFF = ["logging.data_preview=false", "logging.graph=false"]
QUICK = ["dataset.train_size=600", "dataset.test_size=200"]


def seconds_to_line(command: list[str], marker: str) -> float:
    """Launch `command`, return the seconds until it prints a line containing `marker`, then kill it."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=REPO,
    )
    try:
        for line in process.stdout:
            if marker in line:
                return time.perf_counter() - started
        raise RuntimeError(f"{command[0]} exited ({process.wait()}) without printing {marker!r}")
    finally:
        process.kill()
        process.wait()


def seconds_to_exit(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    return time.perf_counter() - started


def rows(args) -> list[Row]:
    root = mnist_root(args.mnist)
    launches = 1 if args.quick else args.repeat
    ours, no_start_pictures, bare, ours_imports, torch_import = [], [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for launch in range(launches):  # alternating, so a burst of load hits both
            command = [
                str(VL_TRAIN),
                "dataset=mnist",
                f"dataset.root={root}",
                "model=cnn",
                "trainer.log_every_n_steps=1",
                *(QUICK if args.quick else []),
            ]
            ours.append(seconds_to_line([*command, f"hydra.run.dir={Path(tmp) / str(launch)}"], "epoch 1 step 1 loss"))
            no_start_pictures.append(
                seconds_to_line(
                    [*command, *START_PICTURES_OFF, f"hydra.run.dir={Path(tmp) / f'{launch}-off'}"],
                    "epoch 1 step 1 loss",
                )
            )
            bare.append(
                seconds_to_line([sys.executable, str(REPO / "bench" / "bare_mnist_step.py"), str(root)], "step 1 loss")
            )
            ours_imports.append(seconds_to_exit([sys.executable, "-c", "import visionlab.cli, visionlab.experiment"]))
            torch_import.append(seconds_to_exit([sys.executable, "-c", "import torch"]))
    fastest = {
        name: min(times)
        for name, times in {
            "ours": ours,
            "no_start_pictures": no_start_pictures,
            "bare": bare,
            "ours_imports": ours_imports,
            "torch_import": torch_import,
        }.items()
    }
    every = f" (fastest of {launches})" if launches > 1 else ""
    quick = " (--quick: vl-train on 600 images)" if args.quick else ""
    return [
        Row(
            f"start-up: command to the end of training step 1, MNIST CNN, s{every}{quick}",
            f"{fastest['ours']:.2f} (vl-train)",
            f"{fastest['bare']:.2f} (bare script)",
            f"{fastest['ours'] - fastest['bare']:+.2f} s overhead",
        ),
        Row(
            f"start-up: the same with {' '.join(START_PICTURES_OFF)}, s{every}{quick}",
            f"{fastest['no_start_pictures']:.2f} (vl-train)",
            f"{fastest['bare']:.2f} (bare script)",
            f"{fastest['no_start_pictures'] - fastest['bare']:+.2f} s overhead",
        ),
        Row(
            f"start-up: imports alone, s{every}",
            f"{fastest['ours_imports']:.2f} (visionlab.cli + experiment)",
            f"{fastest['torch_import']:.2f} (torch)",
            f"+{fastest['ours_imports'] - fastest['torch_import']:.2f} s",
        ),
    ]


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="launches of each command; the fastest is kept (the machine may be shared)",
    )
    main("start-up", rows, cli.parse_args())
