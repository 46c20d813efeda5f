"""A pruned Optuna search against the same search unpruned: wall time and the best val/acc found.

    .venv/bin/python bench/pruned_search.py                    # 20 trials on all of MNIST, 6 epochs, the shipped pruner
    .venv/bin/python bench/pruned_search.py --pruners successive_halving,median
    .venv/bin/python bench/pruned_search.py --quick            # 3 trials of 2 epochs on 600 images: a smoke run

Each is `vl-train -m hparams_search=mlp_optuna dataset=mnist` from the same seed (the same TPE
sampler): first with `hydra/sweeper/pruner=none`, then with each of `--pruners` (the search ships
with successive_halving), each in a fresh process, timed from launch to exit. They draw the same first trials; once a
trial is pruned the sampler's history differs, so later trials may too. Pictures are off and each run
uses one CPU thread, so the figures are about the trials' epochs, not the drawing.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from common import VL_TRAIN, Row, main, mnist_root, parser

NO_PICTURES = ["logging=none"]


def search(root: Path, folder: Path, args, pruner: str | None) -> tuple[float, dict]:
    """Seconds for the whole search, and what its study says: best value, trials pruned, epochs trained."""
    import optuna

    command = [
        str(VL_TRAIN),
        "-m",
        "hparams_search=mlp_optuna",
        "dataset=mnist",
        f"dataset.root={root}",
        f"dataset.train_size={args.train_size}",
        f"dataset.test_size={args.test_size}",
        f"trainer.epochs={args.epochs}",
        "trainer.threads=1",
        "trainer.device=cpu",
        *NO_PICTURES,
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweep.dir={folder}",
        f"hydra.run.dir={folder / 'run'}",
        *([f"hydra/sweeper/pruner={pruner}"] if pruner else []),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=folder.parent)
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{folder / 'optuna.db'}").trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    return seconds, {
        "best": max(t.value for t in done),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
        "epochs": sum(len(t.intermediate_values) or args.epochs for t in trials),
    }


def rows(args) -> list[Row]:
    if args.quick:
        args.trials, args.epochs, args.train_size, args.test_size = 3, 2, 600, 200
    root = mnist_root(args.mnist)
    what = (
        f"{args.trials}-trial MLP search (mlp_optuna), MNIST's first {args.train_size:,} images, {args.epochs} epochs"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        unpruned_s, unpruned = search(root, Path(tmp) / "none", args, "none")
        for pruner in args.pruners.split(","):
            pruned_s, pruned = search(root, Path(tmp) / pruner, args, pruner)
            rows += [
                Row(
                    f"pruned search: {what}, {pruner} pruner, wall s",
                    f"{pruned_s:.0f} ({pruned['pruned']} pruned, {pruned['epochs']} epochs)",
                    f"{unpruned_s:.0f} (no pruner: {unpruned['epochs']} epochs)",
                    f"{pruned_s / unpruned_s:.2f}x the time",
                ),
                Row(
                    f"pruned search: {what}, {pruner} pruner, best val/acc",
                    f"{100 * pruned['best']:.2f}%",
                    f"{100 * unpruned['best']:.2f}% (no pruner)",
                    f"{100 * (pruned['best'] - unpruned['best']):+.2f} points",
                ),
            ]
    return rows


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--trials", type=int, default=20)
    cli.add_argument("--epochs", type=int, default=6, help="each trial's epochs (a pruner needs 2 or more)")
    cli.add_argument(
        "--train-size", type=int, default=60000, help="MNIST's first N training images (a tenth of them is val)"
    )
    cli.add_argument("--test-size", type=int, default=2000, help="MNIST's first N test images")
    cli.add_argument(
        "--pruners", default="successive_halving", help="options of conf/hydra/sweeper/pruner/, comma-separated"
    )
    main("pruned_search", rows, cli.parse_args())
