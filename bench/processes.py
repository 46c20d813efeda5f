"""One run on 2 processes against 1 (`trainer.devices=2`, gloo on the CPU): what DistributedDataParallel costs here.

    .venv/bin/python bench/processes.py            # MNIST's first 6,000 images, 2 epochs, each best of 3
    .venv/bin/python bench/processes.py --quick    # 600 images, 1 epoch, once

The same run (model=mlp, the same global batch of 128 and seed) on the machine's cores: 2 processes of 1 thread
each against 1 process of 2 threads. Two rows: the training seconds metrics.json records (the data loaded; the
collectives of every step, and each rank's own val pass, included), and the whole command, start to exit (the
launcher's rendezvous and each rank's imports included). On a CPU of few cores the processes share what one
process's threads would use: the rows say what the correctness tool costs, not a speed-up; on GPUs each rank has
its own (bench/gpu.py).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

from common import VL_TRAIN, Row, main, mnist_root, parser


def timed(args: list[str], run_dir: Path) -> tuple[float, float]:
    """(training seconds from metrics.json, the command's wall seconds) of one vl-train run."""
    started = time.perf_counter()
    subprocess.run([str(VL_TRAIN), *args, f"hydra.run.dir={run_dir}"], check=True, capture_output=True)
    wall = time.perf_counter() - started
    return json.loads((run_dir / "metrics.json").read_text())["seconds"], wall


def rows(args) -> list[Row]:
    root = mnist_root(args.mnist)
    images, epochs, repeats = (600, 1, 1) if args.quick else (6000, 2, 3)
    common = [
        "dataset=mnist",
        f"dataset.root={root}",
        f"dataset.train_size={images}",
        "dataset.test_size=1000",
        "model=mlp",
        f"trainer.epochs={epochs}",
        "trainer.batch_size=128",
        "trainer.device=cpu",
        "logging=none",
    ]
    two = [*common, "trainer.devices=2", "trainer.threads=1"]
    one = [*common, "trainer.devices=1", "trainer.threads=2"]
    measured: dict[str, list[tuple[float, float]]] = {"two": [], "one": []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(repeats):  # alternating, so a burst of load hits both
            measured["two"].append(timed(two, Path(tmp) / f"two-{repeat}"))
            measured["one"].append(timed(one, Path(tmp) / f"one-{repeat}"))
    train_two, train_one = (min(t for t, _ in measured[k]) for k in ("two", "one"))
    wall_two, wall_one = (min(w for _, w in measured[k]) for k in ("two", "one"))
    name = f"2 processes (trainer.devices=2, 1 thread each) vs 1 of 2 threads: MNIST mlp, {images:,} images"
    return [
        Row(f"{name}, training s", f"{train_two:.2f}", f"{train_one:.2f} (1 process)", f"{train_two / train_one:.2f}x"),
        Row(
            f"{name}, whole command s", f"{wall_two:.1f}", f"{wall_one:.1f} (1 process)", f"{wall_two / wall_one:.2f}x"
        ),
    ]


if __name__ == "__main__":
    main("processes", rows, parser(__doc__).parse_args())
