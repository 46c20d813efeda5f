"""The GPU section: on one NVIDIA GPU, every GPU figure in one table, in under 8 minutes.

    .venv/bin/python bench/gpu.py              # on a machine with a CUDA GPU (MNIST and CIFAR-10 as for make bench)
    .venv/bin/python bench/gpu.py --dry-run    # every part for one step, on the CPU: checks the script,
                                               # measures nothing
    .venv/bin/python bench/gpu.py --parts scaling    # on several GPUs: 1, 2, 4, ... processes (part 5)

Parts, one after the other, each in its own process with its own time limit (seconds, in LIMITS),
and all of them within TOTAL seconds: a part that would run past the total gets only what is left.
A part that runs out of time leaves a row saying so; the others go on.

1. tests: `pytest -m gpu`, the suite's GPU tests (tests/gpu/; they skip where there is no CUDA).
2. MNIST: `vl-train dataset=mnist model=cnn trainer.device=cuda` (every default but the budget: the
   CNN recipe's first epoch alone, as bench/mnist_time_to_accuracy.py times it), launch to exit, and whether its
   test/acc reached 99.0%; beside it the same command on the host's CPU (`trainer.device=cpu`).
3. CIFAR-10: `vl-train experiment=cifar10_gpu`, launch to exit, and whether its test/acc reached 94.0%;
   beside it the same with `trainer.compile=true` (whether compiling pays for a run this short). 94% is airbench's
   figure on the original pixels; on the project's JPEG copy of CIFAR-10 airbench94 itself reaches about 91% on a
   CPU (BENCHMARKS.md, "CIFAR-10 on a CPU"), so the row's test/acc is the figure to compare with that.
4. kNN: full MNIST (60,000 train, 10,000 test), k=3, L2 and L1, fit and prediction on the GPU in the
   exact integer search, against a brute force on the same GPU in exact arithmetic (its indices must
   be equal, ties included).
5. Several GPUs: `vl-train experiment=cifar10_gpu trainer.devices=N` on 1, 2, 4, ... and every GPU (the same run:
   its global batch split over the N processes), each one's run seconds (metrics.json) and the scaling efficiency
   t(1) / (N t(N)). On a machine of one GPU it is one row saying so.

--dry-run runs each part on the CPU with a few hundred images for one step (the compiled run is left out: compiling
takes minutes on a CPU; one MNIST run, on the CPU, is both ours and the host's; the tests run in one process; the
scaling part runs 1 and 2 processes with gloo), with DRY_RUN_LIMIT seconds for each part (a loaded CPU is slow), so the
suite can check that every part runs and that every row lands in the table; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import FIRST_EPOCH, REPO, VL_TRAIN, Row, Skipped, cifar_root, load, machine, mnist_root, parser, table

BENCH = Path(__file__).resolve().parent
TOTAL = 470  # seconds for every part together: the script ends within 8 minutes
LIMITS = {"tests": 75, "mnist": 45, "mnist_cpu": 45, "cifar10": 120, "cifar10_compile": 120, "knn": 60, "scaling": 120}
MNIST_TARGET, CIFAR_TARGET = 0.99, 0.94
# One step each: a training split of under one batch (10% of it is val), a small test split.
DRY_MNIST = ["dataset.train_size=140", "dataset.test_size=100"]
DRY_CIFAR = ["dataset.train_size=100", "dataset.test_size=50", "trainer.epochs=1", "trainer.precision=32"]
KNN_SIZES = {False: (60_000, 10_000), True: (2_000, 300)}  # (train, test) by --dry-run


DRY_RUN_LIMIT = 600  # seconds per part in --dry-run: a shared CPU can be slow, and nothing is timed


class Clock:
    """The time left of TOTAL, and each part's share of it; in --dry-run, DRY_RUN_LIMIT per part."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.deadline = time.monotonic() + TOTAL

    def limit(self, part: str) -> float:
        if self.dry_run:
            return DRY_RUN_LIMIT
        return max(1.0, min(LIMITS[part], self.deadline - time.monotonic()))


def timed_run(command: list[str], limit: float) -> tuple[float, subprocess.CompletedProcess | None]:
    """Seconds from launch to exit, and the finished process; None if it ran past `limit` (then it is killed)."""
    started = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=limit, cwd=REPO)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - started, None
    return time.perf_counter() - started, done


def failure(done: subprocess.CompletedProcess | None, limit: float) -> str | None:
    if done is None:
        return f"timed out: still running after its limit of {limit:.0f} s"
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        return f"failed (exit code {done.returncode}): {last[0][:200]}"
    return None


def tests_row(args, clock: Clock) -> Row:
    limit = clock.limit("tests")
    # --dry-run: in one process (each of xdist's workers would import torch and the suite's conftest again)
    in_one = ["-n", "0"] if args.dry_run else []
    seconds, done = timed_run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *in_one, "tests/gpu"], limit
    )
    if done is None:
        return Row("GPU: pytest -m gpu", failure(done, limit), "", "")
    counts = re.findall(r"(\d+) (passed|failed|skipped|error)", done.stdout)
    summary = ", ".join(f"{n} {what}" for n, what in counts) or f"exit code {done.returncode}"
    return Row(
        "GPU: pytest -m gpu",
        f"{summary} in {seconds:.0f} s",
        "",
        "all passed" if done.returncode == 0 and "skipped" not in summary else "see the output",
    )


def train(overrides: list[str], limit: float) -> tuple[float, dict | str]:
    """A vl-train run's seconds from launch to exit and its metrics.json, or why there are none."""
    with tempfile.TemporaryDirectory() as tmp:
        seconds, done = timed_run([str(VL_TRAIN), *overrides, f"hydra.run.dir={tmp}/run"], limit)
        return seconds, failure(done, limit) or json.loads((Path(tmp) / "run" / "metrics.json").read_text())


def reached(seconds: float, metrics: dict | str, target: float) -> str:
    if isinstance(metrics, str):
        return metrics
    accuracy, epochs = metrics["test/acc"], metrics["epochs"]
    verdict = f"{seconds:.1f}" if accuracy >= target else f"not reached in {seconds:.1f}"
    return f"{verdict} (test/acc {accuracy:.2%} after {epochs} epoch{'s' * (epochs != 1)}, {metrics['device']})"


def ratio(ours: tuple[float, dict | str], baseline: tuple[float, dict | str]) -> str:
    return (
        f"{baseline[0] / ours[0]:.2f}x less time"
        if not isinstance(ours[1], str) and not isinstance(baseline[1], str)
        else "n/a"
    )


def mnist_rows(args, clock: Clock) -> list[Row]:
    root = mnist_root(args.mnist)
    command = ["dataset=mnist", f"dataset.root={root}", "model=cnn", *FIRST_EPOCH, *(DRY_MNIST if args.dry_run else [])]
    ours = train([*command, f"trainer.device={'cpu' if args.dry_run else 'cuda'}"], clock.limit("mnist"))
    # --dry-run: ours ran on the CPU, the very same command
    host = ours if args.dry_run else train([*command, "trainer.device=cpu"], clock.limit("mnist_cpu"))
    return [
        Row(
            f"GPU: MNIST CNN, time to >= {MNIST_TARGET:.1%} test accuracy, s (vl-train defaults)",
            reached(*ours, MNIST_TARGET),
            f"{reached(*host, MNIST_TARGET)} (the same on the host's CPU)",
            ratio(ours, host),
        )
    ]


def cifar_rows(args, clock: Clock) -> list[Row]:
    root = cifar_root(args.cifar)
    command = ["experiment=cifar10_gpu", f"dataset.root={root}", "dataset.download=false"]
    command += [*DRY_CIFAR, "trainer.device=cpu"] if args.dry_run else ["trainer.device=cuda"]
    ours = train(command, clock.limit("cifar10"))
    if args.dry_run:
        compiled = "not run in --dry-run (compiling takes minutes on a CPU)"
        return [
            Row(
                f"GPU: CIFAR-10 experiment=cifar10_gpu, time to >= {CIFAR_TARGET:.1%} test accuracy, s",
                reached(*ours, CIFAR_TARGET),
                compiled,
                "n/a",
            )
        ]
    compiled_run = train([*command, "trainer.compile=true"], clock.limit("cifar10_compile"))
    return [
        Row(
            f"GPU: CIFAR-10 experiment=cifar10_gpu, time to >= {CIFAR_TARGET:.1%} test accuracy, s",
            reached(*ours, CIFAR_TARGET),
            f"{reached(*compiled_run, CIFAR_TARGET)} (with trainer.compile=true)",
            ratio(ours, compiled_run),
        )
    ]


def process_counts(gpus: int) -> list[int]:
    """1, 2, 4, ... up to `gpus`, and `gpus` itself."""
    return sorted({*(2**i for i in range(gpus.bit_length()) if 2**i <= gpus), gpus})


def scaling_rows(args, clock: Clock) -> list[Row]:
    import torch

    root = cifar_root(args.cifar)
    gpus = 2 if args.dry_run else torch.cuda.device_count()
    name = "GPU: CIFAR-10 experiment=cifar10_gpu on {} process{}, run seconds (metrics.json)"
    if gpus < 2:
        return [Row(name.format("several", "es"), f"skipped: {gpus} GPU here (this part needs 2 or more)", "", "")]
    command = ["experiment=cifar10_gpu", f"dataset.root={root}", "dataset.download=false"]
    command += [*DRY_CIFAR, "trainer.device=cpu"] if args.dry_run else ["trainer.device=cuda"]
    runs = {
        count: train([*command, f"trainer.devices={count}"], clock.limit("scaling")) for count in process_counts(gpus)
    }
    one = runs[1][1]
    rows = []
    for count, (_, metrics) in runs.items():
        if isinstance(metrics, str) or isinstance(one, str):
            figures = (metrics if isinstance(metrics, str) else f"{metrics['seconds']:.1f}", "", "n/a")
        else:
            speedup = one["seconds"] / metrics["seconds"]
            figures = (
                f"{metrics['seconds']:.1f} (test/acc {metrics['test/acc']:.2%}, {metrics['device']})",
                f"{one['seconds']:.1f} (1 process)",
                f"{speedup / count:.0%} scaling efficiency ({speedup:.2f}x faster)",
            )
        rows.append(Row(name.format(count, "" if count == 1 else "es"), *figures))
    return rows


def knn_rows(args, clock: Clock) -> list[Row]:
    root = mnist_root(args.mnist)
    limit = clock.limit("knn")
    command = [sys.executable, str(BENCH / "gpu.py"), "--knn-part", "--mnist", str(root)] + ["--dry-run"] * args.dry_run
    _, done = timed_run(command, limit)
    problem = failure(done, limit)
    if problem:
        return [Row("GPU: kNN MNIST k=3", problem, "", "")]
    rows = []
    for distance, result in json.loads(done.stdout.splitlines()[-1]).items():
        title = (
            f"GPU: kNN MNIST {distance.upper()}, k=3: fit + predict, s ({result['train']:,} train, "
            f"{result['test']:,} test, {result['device']}, training images stored as {result['stored_as']})"
        )
        same = (
            "indices equal, ties included"
            if result["equal"]
            else f"indices differ for {result['different']} test images"
        )
        rows.append(
            Row(
                title,
                f"{result['ours']:.2f}",
                f"{result['brute']:.2f} (exact brute force, same device)",
                f"{result['brute'] / result['ours']:.1f}x faster; {same}",
            )
        )
    return rows


def knn_part(args) -> None:
    """Runs in its own process (see knn_rows): prints one JSON line of each distance's figures."""
    import torch
    import torchvision

    from visionlab.data import DeviceSplit
    from visionlab.models.knn import KNN

    device = torch.device("cpu" if args.dry_run else "cuda")
    n_train, n_test = KNN_SIZES[args.dry_run]
    train, test = (torchvision.datasets.MNIST(str(args.mnist), train=t, download=False) for t in (True, False))
    images, labels = train.data[:n_train].unsqueeze(1).to(device), train.targets[:n_train].to(device)
    queries = test.data[:n_test].unsqueeze(1).to(device)
    split = DeviceSplit(images, labels, torch.ones(1, 1, 1, 1, device=device), torch.zeros(1, 1, 1, 1, device=device))
    results = {}
    for distance in ("l2", "l1"):
        synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        synchronize()
        started = time.perf_counter()
        model = KNN((1, 28, 28), 10, k=3, distance=distance)
        model.fit(split)
        with torch.inference_mode():
            found = torch.cat([model.neighbours(batch.float(), 3)[1] for batch in queries.split(1024)])
        synchronize()
        ours = time.perf_counter() - started
        started = time.perf_counter()
        expected = brute_force(images.flatten(1), queries.flatten(1), distance, 3)
        synchronize()
        brute = time.perf_counter() - started
        different = int((found != expected).any(1).sum())
        results[distance] = {
            "ours": ours,
            "brute": brute,
            "equal": different == 0,
            "different": different,
            "train": n_train,
            "test": n_test,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "stored_as": str(model.train_features.dtype),
        }
    print(json.dumps(results))


def brute_force(train, queries, distance: str, k: int):
    """The k nearest training indices by exact distances of 8-bit pixels, the lower index first at equal
    distance, 500 queries at a time: L2 squared by float64 matrix products (integers below 2^53), L1 by
    float32 cdist (sums of integers below 2^24: exact in any order, and far faster than float64 on a GPU)."""
    import torch

    found = []
    for part in queries.split(500):
        if distance == "l2":
            train64, part64 = train.double(), part.double()
            distances = (train64.square().sum(1) - 2 * part64 @ train64.T) + part64.square().sum(1, keepdim=True)
        else:
            distances = torch.cdist(part.float(), train.float(), p=1)
        found.append(distances.argsort(dim=1, stable=True)[:, :k])
    return torch.cat(found)


PARTS = {"mnist": mnist_rows, "cifar10": cifar_rows, "knn": knn_rows, "scaling": scaling_rows}


def rows(args) -> list[Row]:
    clock = Clock(args.dry_run)
    made = [tests_row(args, clock)] if "tests" in args.parts else []
    for part in (PARTS[name] for name in PARTS if name in args.parts):
        try:
            made += part(args, clock)
        except Skipped as exc:
            print(f"skipped: {exc}", file=sys.stderr, flush=True)
            made.append(Row(f"GPU: {part.__name__.removesuffix('_rows')}", f"skipped: {exc}", "", ""))
    return made


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument(
        "--dry-run", action="store_true", help="every part for one step on the CPU: checks the script, measures nothing"
    )
    cli.add_argument("--knn-part", action="store_true", help=argparse.SUPPRESS)  # the kNN part, in its own process
    every = ["tests", *PARTS]
    cli.add_argument(
        "--parts",
        type=lambda text: text.split(","),
        default=every,
        help=f"comma-separated, of {','.join(every)} (default: all; scaling alone on a machine of several GPUs)",
    )
    args = cli.parse_args()
    if unknown := sorted(set(args.parts) - set(every)):
        cli.error(f"--parts: unknown {', '.join(unknown)}; use some of {', '.join(every)}")
    args.dry_run = args.dry_run or args.quick
    if args.dry_run:  # on a shared CPU (the test suite's): idle OpenMP threads sleep, not spin, in every part
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.knn_part:
        return knn_part(args)
    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print(
            "bench/gpu.py: no CUDA GPU here (torch.cuda.is_available() is false): run it on a GPU machine, "
            "or with --dry-run to check it on the CPU",
            file=sys.stderr,
        )
        sys.exit(2)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"GPU benchmarks{' (--dry-run: one step each on the CPU, not measurements)' * args.dry_run}: {started}, "
        f"{load()}",
        flush=True,
    )
    made = rows(args)
    print(f"\n{table(made)}\n\nmachine: {machine()}; {load()} at the end", flush=True)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in made]))


if __name__ == "__main__":
    main()
