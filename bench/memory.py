"""Memory: peak resident set size of `vl-train` on MNIST and CIFAR-10, against torch's own footprint.

    .venv/bin/python bench/memory.py            # one epoch of the default CNN on each dataset, median of 3 runs
    .venv/bin/python bench/memory.py --quick    # 600 training images, one run

Ours is `vl-train dataset=<name> model=cnn trainer.epochs=1` (every other default). The torch
baseline is a process that imports torch and trains and evaluates the same CNN (channels-last, as
vl-train's default) at the same batch sizes (trainer.batch_size, trainer.eval_batch_size) on random
tensors: what torch itself needs, with no dataset and no runner.
The target is that baseline plus twice the dataset's uint8 pixels (train and test), so that the
data copies and everything the runner loads (Hydra, TensorBoard, Pillow, rich) fit in 2x the
data. Peak RSS is the kernel's count for the finished child (`os.wait4`'s ru_maxrss, what
`/usr/bin/time -v` reports as "Maximum resident set size"). It varies by a few tens of MiB from run
to run (allocator and thread timing), so each figure is the median of --repeat runs.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import tempfile

from common import REPO, VL_TRAIN, Row, cifar_root, main, mnist_root, parser

sys.path.insert(0, str(REPO))
from tests.conftest import compose_train  # noqa: E402  (the repository's real config)

TORCH_ALONE = """
import sys
import torch
import torch.nn.functional as F
from visionlab.models.cnn import CNN

shape = tuple(int(x) for x in sys.argv[1].split("x"))
batch_size, eval_batch_size = int(sys.argv[2]), int(sys.argv[3])
model = CNN(shape, 10).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
for _ in range(3):
    loss = F.cross_entropy(model(torch.randn(batch_size, *shape)), torch.randint(0, 10, (batch_size,)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
model.eval()
with torch.inference_mode():
    for _ in range(3):
        model(torch.randn(eval_batch_size, *shape)).argmax(1)
"""

DATASETS = {  # name: (image shape, training + test images)
    "mnist": ((1, 28, 28), 70_000),
    "cifar10": ((3, 32, 32), 60_000),
}


def peak_mib(command: list[str]) -> float:
    """The finished command's peak resident set size, MiB."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command)
    return usage.ru_maxrss / 1024  # Linux reports KiB


def rows(args) -> list[Row]:
    out = []
    roots = {"mnist": lambda: mnist_root(args.mnist), "cifar10": lambda: cifar_root(args.cifar)}
    for name, (shape, images) in DATASETS.items():
        root = roots[name]()
        small = ["dataset.train_size=600", "dataset.test_size=200"] if args.quick else []
        if args.quick:
            images = 800
        runs = 1 if args.quick else args.repeat
        trainer = compose_train().trainer
        with tempfile.TemporaryDirectory() as tmp:
            ours = statistics.median(
                peak_mib(
                    [
                        str(VL_TRAIN),
                        f"dataset={name}",
                        f"dataset.root={root}",
                        "model=cnn",
                        "trainer.epochs=1",
                        *small,
                        f"hydra.run.dir={tmp}/{run}",
                    ]
                )
                for run in range(runs)
            )
        torch_alone = statistics.median(
            peak_mib(
                [
                    sys.executable,
                    "-c",
                    TORCH_ALONE,
                    "x".join(map(str, shape)),
                    str(trainer.batch_size),
                    str(trainer.eval_batch_size),
                ]
            )
            for _ in range(runs)
        )
        data = images * math.prod(shape) / 2**20
        target = torch_alone + 2 * data
        shown = "MNIST" if name == "mnist" else "CIFAR-10"
        quick = " (--quick: 800 images)" if args.quick else ""
        every = f" (median of {runs})" if runs > 1 else ""
        out.append(
            Row(
                f"memory: peak RSS, {shown} CNN, 1 epoch, MiB{quick}{every}",
                f"{ours:,.0f}",
                f"{target:,.0f} target = {torch_alone:,.0f} (torch alone, same CNN) + 2 x {data:,.0f} (uint8 pixels)",
                f"{ours / target:.2f} of target; ours - torch = {(ours - torch_alone) / data:.2f}x the pixels",
            )
        )
    return out


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--repeat", type=int, default=3, help="runs of each command; the median is kept")
    main("memory", rows, cli.parse_args())
