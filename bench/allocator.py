"""The allocator: the default CNN's training step under glibc's malloc defaults, and as vl-train runs it.

    .venv/bin/python bench/allocator.py            # about a minute
    .venv/bin/python bench/allocator.py --quick    # a smoke run: a few steps, both shapes in one process

vl-train calls `keep_freed_memory()` (src/visionlab/training/speed.py) before training: glibc then
serves buffers up to 32 MiB from its heap and keeps up to 1 GiB of freed memory, instead of mapping
each large buffer afresh and trimming the heap, which makes every step fault its activations back
in page by page. Nothing else differs, so nothing else is compared.

The step is the `conf/` default CNN's (forward, cross-entropy, backward, Adam; batch 128, float32,
channels-last) on random MNIST-shaped (1x28x28) and CIFAR-10-shaped (3x32x32) batches, timed in
fresh processes, alternating: glibc's defaults (the baseline), then keep_freed_memory(), --rounds
times (--quick: once, both shapes in one process). Reported: the median milliseconds per step over the
rounds, and minor page faults per step.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from common import REPO, Row, Skipped, main, parser

STEPS = """
import json, resource, sys, time, torch
from visionlab.models.cnn import CNN
from visionlab.cores import allowed
from visionlab.training.speed import keep_freed_memory
mode, warmup, steps = sys.argv[1], int(sys.argv[3]), int(sys.argv[4])
shapes = [tuple(map(int, shape.split("x"))) for shape in sys.argv[2].split(",")]
torch.set_num_threads(allowed().cores)
kept = mode == "kept" and keep_freed_memory()
for shape in shapes:
    torch.manual_seed(0)
    model = CNN(shape, 10).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    images, labels = torch.randn(128, *shape), torch.randint(0, 10, (128,))
    def step():
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    for _ in range(warmup):
        step()
    faults, started = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    for _ in range(steps):
        step()
    seconds, faults = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    print(json.dumps({"kept": kept, "ms_per_step": 1000 * seconds / steps, "faults_per_step": faults / steps}))
"""

SHAPES = {"MNIST": "1x28x28", "CIFAR-10": "3x32x32"}


def measure(mode: str, shapes: list[str], warmup: int, steps: int) -> list[dict]:
    """One process's result for each of `shapes`, in turn."""
    done = subprocess.run(
        [sys.executable, "-c", STEPS, mode, ",".join(shapes), str(warmup), str(steps)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    results = [json.loads(line) for line in done.stdout.splitlines()]
    if results[0]["kept"] != (mode == "kept"):
        raise Skipped("keep_freed_memory() changes nothing here: the C library is not glibc")
    return results


def rows(args) -> list[Row]:
    warmup, steps, rounds = (1, 2, 1) if args.quick else (10, args.steps, args.rounds)
    # a fresh process for each shape; --quick shares one between the shapes, to start half as many
    groups = [list(SHAPES)] if args.quick else [[name] for name in SHAPES]
    measured = {name: {"default": [], "kept": []} for name in SHAPES}
    for group in groups:
        for _ in range(rounds):
            for mode in ("default", "kept"):
                results = measure(mode, [SHAPES[name] for name in group], warmup, steps)
                for name, result in zip(group, results):
                    measured[name][mode].append(result)
    out = []
    for name, runs in measured.items():
        ms = {mode: statistics.median(r["ms_per_step"] for r in results) for mode, results in runs.items()}
        faults = {mode: statistics.median(r["faults_per_step"] for r in results) for mode, results in runs.items()}
        out += [
            Row(
                f"allocator: {name} default CNN, ms per training step (median of {rounds} "
                f"process{'es' * (rounds != 1)}, {steps} steps each)",
                f"{ms['kept']:.1f}",
                f"{ms['default']:.1f} (glibc's defaults)",
                f"{ms['default'] / ms['kept']:.2f}x faster",
            ),
            Row(
                f"allocator: {name} default CNN, page faults per training step",
                f"{faults['kept']:,.0f}",
                f"{faults['default']:,.0f} (glibc's defaults)",
                "",
            ),
        ]
    return out


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--steps", type=int, default=100, help="timed steps per process")
    cli.add_argument("--rounds", type=int, default=3, help="processes per setting and shape, alternating")
    main("allocator", rows, cli.parse_args())
