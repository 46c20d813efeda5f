"""The CNN recipe's epoch budget against its old fixed single epoch, on MNIST and on data it was not tuned on.

    .venv/bin/python bench/recipe_budget.py            # MNIST, and CIFAR-10 as 28x28 grey images from its JPEG tree
    .venv/bin/python bench/recipe_budget.py --quick    # 600 images of each: a smoke run

Ours: `vl-train model=cnn` with every default (the recipe: up to 10 epochs of one cosine cycle each,
ending once val/acc gains no more than half a point, the best epoch tested). Baseline: the recipe
as it was, one epoch and nothing else (`FIRST_EPOCH`: the budget's first epoch is that run step for step). The second
dataset stands in for another 28x28, 10-class set a user brings (Fashion-MNIST is not on this machine): CIFAR-10's JPEG
tree through `dataset=folder` resized to 28x28 and turned grey, with no augmentation, so that it is that user's
command; its cache is made before either run. Time is metrics.json's `seconds` (from the built config
to the end), one launch each, same seed.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from common import FIRST_EPOCH, REPO, VL_TRAIN, Row, main, mnist_root, parser
from folder_decode import subset, unpacked

QUICK = ["dataset.train_size=600", "dataset.test_size=100"]
QUICK_FILES = 800


def launch(overrides: list[str], run_dir: Path) -> dict:
    """One vl-train's metrics.json (none for summary_only=true)."""
    subprocess.run(
        [str(VL_TRAIN), "model=cnn", "trainer.device=cpu", *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run_dir / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


def shown(metrics: dict) -> str:
    epochs = metrics["epochs"]
    return f"{100 * metrics['test/acc']:.2f}% ({epochs} epoch{'s' * (epochs != 1)}, {metrics['seconds']:.1f} s)"


def rows(args) -> list[Row]:
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        tree = unpacked(args.tree)
        if args.quick:
            tree = subset(tree, QUICK_FILES, scratch / "small")
        small = QUICK if args.quick else []
        datasets = {
            "MNIST": ["dataset=mnist", f"dataset.root={mnist_root(args.mnist)}", *small],
            "CIFAR-10 as 28x28 grey (dataset=folder)": [
                "dataset=folder",
                f"dataset.root={tree}",
                "dataset.size=[28,28]",
                "dataset.channels=1",
                f"dataset.cache_dir={scratch / 'cache'}",
                *small,
            ],
        }
        out = []
        for number, (name, data) in enumerate(datasets.items()):
            # the folder's decode is no side's cost
            launch([*data, "summary_only=true"], scratch / f"{number}-fill-the-cache")
            budget = launch(data, scratch / f"{number}-budget")
            single = launch([*data, *FIRST_EPOCH], scratch / f"{number}-one")
            out.append(
                Row(
                    f"cnn recipe, {name}: test/acc (epochs, run seconds){' --quick' * args.quick}",
                    shown(budget),
                    shown(single) + " (one epoch)",
                    f"{100 * (budget['test/acc'] - single['test/acc']):+.2f} points",
                )
            )
    return out


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--tree",
        type=Path,
        default=REPO / ".cache" / "cifar10-jpeg",
        help="the CIFAR-10 JPEG tree (unpacked there if absent)",
    )
    main("recipe budget", rows, arguments.parse_args())
