"""experiment=cifar10_fast against its 25-minute budget: CIFAR-10 test accuracy over seeds, launch to exit.

    .venv/bin/python bench/cifar10_fast.py               # seeds 0, 1, 2 and the baseline
                                                         # (about 65 minutes on 2 cores with bf16)
    .venv/bin/python bench/cifar10_fast.py --seeds 0     # one seed
    .venv/bin/python bench/cifar10_fast.py --quick       # 100 images, one epoch, no pictures, seeds 0 and 1:
                                                         # a smoke run

Ours: `vl-train experiment=cifar10_fast seed=S`, every default, one launch per seed, timed from the
command to its exit (the budget's measure: start-up, the whitening fit, training, the test pass with
its test-time augmentation). Baseline: `experiment=cifar10_resnet_small`, the CPU recipe before it
(8 epochs), seed 0, in the same run. What test-time augmentation bought is measured on seed 0's saved
model, rescored by `vl-eval` with each `trainer.tta`: the recipe's own setting must give back
metrics.json's test/acc exactly (the check that the rescoring is the run's test pass). What
`trainer.precision=auto` bought: one epoch of seed 0 launched with it and with 32, side by side.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import REPO, VL_TRAIN, Row, cifar_root, main, parser
from visionlab.training.precision import resolved
from visionlab.tta import TTA_MODES

VL_EVAL = VL_TRAIN.with_name("vl-eval")
BUDGET_S = 25 * 60
QUICK = ["dataset.train_size=100", "dataset.test_size=20", "trainer.epochs=1", "logging=none"]  # one step, no pictures
QUICK_SEEDS = "0,1"


def launch(overrides: list[str], run_dir: Path) -> tuple[dict, float]:
    """One vl-train's metrics.json and its seconds from launch to exit."""
    started = time.perf_counter()
    subprocess.run(
        [str(VL_TRAIN), *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    return json.loads((run_dir / "metrics.json").read_text()), seconds


def rescored(run_dir: Path, tta: str) -> float:
    """test/acc of the run's last.pt (its final weights) under another test-time augmentation."""
    subprocess.run(
        [str(VL_EVAL), str(run_dir), f"trainer.tta={tta}"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return json.loads((run_dir / "eval_last_test.json").read_text())["test/acc"]


def percent(x: float) -> str:
    return f"{100 * x:.2f}%"


def rows(args) -> list[Row]:
    data = [f"dataset.root={cifar_root(args.cifar)}", "trainer.device=cpu", *(QUICK if args.quick else [])]
    quick = " --quick" * args.quick
    args.seeds = args.seeds or (QUICK_SEEDS if args.quick else "0,1,2")
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        runs = {}
        for seed in seeds:
            runs[seed] = launch(["experiment=cifar10_fast", f"seed={seed}", *data], scratch / f"fast-{seed}")
            print(
                f"seed {seed}: test/acc {percent(runs[seed][0]['test/acc'])}, {runs[seed][1]:.0f} s launch to exit",
                flush=True,
            )
        baseline, baseline_s = launch(["experiment=cifar10_resnet_small", "seed=0", *data], scratch / "baseline")
        one_epoch = [] if args.quick else ["trainer.epochs=1"]
        here = resolved("auto", torch.device("cpu"))
        epoch_s = {
            precision: (
                # --quick trains one epoch with the recipe's precision=auto: seed 0's run is this launch (and 32's,
                # where auto is 32)
                runs[0][1]
                if args.quick and precision in ("auto", here) and 0 in runs
                else launch(
                    ["experiment=cifar10_fast", "seed=0", f"trainer.precision={precision}", *one_epoch, *data],
                    scratch / f"epoch-{precision}",
                )[1]
            )
            for precision in ("auto", "32")
        }
        first = scratch / f"fast-{seeds[0]}"
        recipe_tta = OmegaConf.load(first / ".hydra" / "config.yaml").trainer.tta
        by_tta = {tta: rescored(first, tta) for tta in TTA_MODES}
    accuracies = [metrics["test/acc"] for metrics, _ in runs.values()]
    seconds = [s for _, s in runs.values()]
    if by_tta[recipe_tta] != runs[seeds[0]][0]["test/acc"]:
        raise AssertionError(
            f"vl-eval's test/acc {by_tta[recipe_tta]} is not the run's {runs[seeds[0]][0]['test/acc']}"
        )
    spread = f"{percent(min(accuracies))}-{percent(max(accuracies))}"
    out = [
        Row(
            f"cifar10_fast: CIFAR-10 test/acc, mean (range) over seeds {args.seeds}{quick}",
            f"{percent(statistics.mean(accuracies))} ({spread})",
            f"{percent(baseline['test/acc'])} (cifar10_resnet_small, seed 0)",
            f"{100 * (statistics.mean(accuracies) - baseline['test/acc']):+.2f} points",
        ),
        Row(
            f"cifar10_fast: launch to exit, s, by seed (budget {BUDGET_S}){quick}",
            ", ".join(f"{s:.0f}" for s in seconds),
            f"{baseline_s:.0f} (cifar10_resnet_small)",
            f"{max(seconds) / BUDGET_S:.2f}x the budget at most",
        ),
    ]
    out += [
        Row(
            f"cifar10_fast seed {seed}: test/acc, epochs, launch to exit{quick}",
            f"{percent(metrics['test/acc'])}, {metrics['epochs']} epochs, {s:.0f} s",
            "",
            "",
        )
        for seed, (metrics, s) in runs.items()
    ]
    out.append(
        Row(
            f"cifar10_fast seed {seeds[0]}'s model: test/acc by trainer.tta{quick}",
            ", ".join(f"{tta} {percent(acc)}" for tta, acc in by_tta.items()),
            f"none {percent(by_tta['none'])}",
            f"{100 * (by_tta[recipe_tta] - by_tta['none']):+.2f} points ({recipe_tta})",
        )
    )
    out.append(
        Row(
            f"cifar10_fast: one epoch, launch to exit, s, trainer.precision=auto ({here} here) against 32{quick}",
            f"{epoch_s['auto']:.0f}",
            f"{epoch_s['32']:.0f}",
            f"{epoch_s['32'] / epoch_s['auto']:.2f}x",
        )
    )
    return out


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--seeds", help=f"comma-separated seeds of experiment=cifar10_fast (0,1,2; --quick: {QUICK_SEEDS})"
    )
    main("cifar10_fast", rows, arguments.parse_args())
