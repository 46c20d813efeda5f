"""The recipes' epoch budgets (`trainer.epochs=auto`) against a longer fixed schedule, on MNIST and on data they
were not tuned on.

    .venv/bin/python bench/recipe_budget.py            # linear, mlp and cnn on five datasets (about 20 minutes)
    .venv/bin/python bench/recipe_budget.py --quick    # 300 MNIST images and a folder of 90, tiny budgets: a smoke run
    .venv/bin/python bench/recipe_budget.py --datasets folder    # the datasets whose names hold a given word

Ours: `vl-train model=M` with every default, its recipe's budget (conf/recipe/<model>.yaml): linear and mlp 3
epochs, cnn up to 10 with early stopping (patience 2); at least 200 (linear) or 400 (mlp, cnn) optimizer steps
however small the train split, every one trained and the last weights tested there. Baseline: the same command for
three times the epochs the budget trained, every one of them (`trainer.epochs=3E trainer.early_stopping.patience=null`):
what a longer fixed schedule would have bought. On the
small folders, a second row against the defaults before the budget: 3 epochs for linear and mlp, and cnn's 10
epochs with early stopping from the first (`trainer.epochs=10 trainer.early_stopping.patience=1`).

The datasets: MNIST (54,000 training images); CIFAR-10's JPEG tree through `dataset=folder` resized to 28x28 and
turned grey (45,000), another 10-class 28x28 set harder than MNIST, as a user brings one; and three folders of its
training JPEGs as a student's own photos: 3 classes x 100 (216 images to train on, 2 steps an epoch at batch 128),
10 x 60 (432) and 10 x 200 (1,440). A folder's test split is 20% of it, val 10% of the rest. Each folder's
cache is made before any run; time is metrics.json's `seconds` (from the built config to the end), one launch each,
same seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

from common import REPO, VL_TRAIN, Row, main, mnist_root, parser
from folder_decode import unpacked

QUICK_MNIST = ["dataset.train_size=300", "dataset.test_size=100"]
# MNIST's 300 images (3 steps an epoch) make min_steps in the budget's epochs, the folder's (1 step) in more
QUICK_BUDGET = ["trainer.epoch_budget.epochs=2", "trainer.epoch_budget.min_steps=4"]
# (name, classes, images per class) of the small folders
FOLDERS = [("3 classes x 100", ["airplane", "frog", "truck"], 100), ("10 classes x 60", None, 60)]
FOLDERS += [("10 classes x 200", None, 200)]
MODELS = ("linear", "mlp", "cnn")
# the defaults before the budget: 3 epochs; cnn: 10 epochs, early stopping from the first with patience 1
BEFORE = {"linear": ["trainer.epochs=3"], "mlp": ["trainer.epochs=3"]}
BEFORE["cnn"] = ["trainer.epochs=10", "trainer.early_stopping.patience=1"]


def launch(overrides: list[str], run_dir: Path) -> dict:
    """One vl-train's metrics.json (none for summary_only=true)."""
    subprocess.run(
        [str(VL_TRAIN), "trainer.device=cpu", "logging=none", *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = run_dir / "metrics.json"
    return json.loads(metrics.read_text()) if metrics.exists() else {}


def shown(metrics: dict) -> str:
    epochs = metrics["epochs"]
    return (
        f"{100 * metrics['test/acc']:.2f}% ({epochs} epoch{'s' * (epochs != 1)}, {metrics['steps']} steps, "
        f"{metrics['seconds']:.1f} s)"
    )


def points(ours: dict, theirs: dict) -> str:
    return f"{100 * (ours['test/acc'] - theirs['test/acc']):+.2f} points"


def class_folder(train: Path, classes: list[str] | None, per_class: int, folder: Path) -> Path:
    """A folder of `per_class` of each class's first training JPEGs (symbolic links), one subfolder per class."""
    for name in classes or sorted(os.listdir(train)):
        (folder / name).mkdir(parents=True)
        for file in sorted(os.listdir(train / name))[:per_class]:
            (folder / name / file).symlink_to(train / name / file)
    return folder


def datasets(args, scratch: Path) -> dict[str, tuple[list[str], tuple[str, ...], bool]]:
    """name -> (its overrides, the models run on it, whether it is a small folder)."""
    tree = unpacked(args.tree)
    mnist = ["dataset=mnist", f"dataset.root={mnist_root(args.mnist)}"]
    if args.quick:  # each path once: a large set (MNIST's subset), a small folder, both kinds of budget
        folder = class_folder(tree / "train", ["airplane", "frog", "truck"], 30, scratch / "folder")
        return {
            "MNIST --quick (300 images)": ([*mnist, *QUICK_MNIST], ("cnn",), False),
            "a folder of 3 classes x 30 --quick": (
                ["dataset=folder", f"dataset.root={folder}"],
                ("linear", "cnn"),
                True,
            ),
        }
    grey = ["dataset=folder", f"dataset.root={tree}", "dataset.size=[28,28]", "dataset.channels=1"]
    found = {"MNIST": (mnist, MODELS, False), "CIFAR-10 as 28x28 grey (dataset=folder)": (grey, MODELS, False)}
    for number, (name, classes, per_class) in enumerate(FOLDERS):
        folder = class_folder(tree / "train", classes, per_class, scratch / f"folder-{number}")
        found[f"a folder of {name}"] = (["dataset=folder", f"dataset.root={folder}"], MODELS, True)
    words = args.datasets.split(",") if args.datasets else [""]
    return {name: found[name] for name in found if any(word in name for word in words)}


def rows(args) -> list[Row]:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for number, (name, (data, models, small)) in enumerate(datasets(args, scratch).items()):
            if "dataset=folder" in data:  # its decode is no side's cost
                data = [*data, f"dataset.cache_dir={scratch / 'cache' / str(number)}"]
                launch([*data, "summary_only=true"], scratch / f"{number}-fill-the-cache")
            for model in models:
                runs = scratch / f"{number}-{model}"
                ours = launch([f"model={model}", *data, *(QUICK_BUDGET if args.quick else [])], runs / "budget")
                epochs = 3 * ours["epochs"]
                longer = launch(
                    [f"model={model}", *data, f"trainer.epochs={epochs}", "trainer.early_stopping.patience=null"],
                    runs / "longer",
                )
                out.append(
                    Row(
                        f"epoch budget, {model}, {name}: test/acc (epochs, steps, run s)",
                        shown(ours),
                        f"{shown(longer)}, fixed",
                        points(ours, longer),
                    )
                )
                if small:
                    before = launch([f"model={model}", *data, *BEFORE[model]], runs / "before")
                    out.append(
                        Row(
                            f"epoch budget, {model}, {name}: against the default before it",
                            shown(ours),
                            f"{shown(before)}, before",
                            points(ours, before),
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
    arguments.add_argument("--datasets", help="comma-separated words: only the datasets whose names hold one")
    main("recipe budget", rows, arguments.parse_args())
