"""experiment=cifar10_fast beside airbench94 itself on this CPU: CIFAR-10 test accuracy over seeds, launch to exit.

    .venv/bin/python bench/cifar10_fast.py               # seeds 0, 1, 2, each beside the airbench port
                                                         # (about two hours on 2 cores with bf16)
    .venv/bin/python bench/cifar10_fast.py --seeds 0     # one seed
    .venv/bin/python bench/cifar10_fast.py --quick       # 100 images, one epoch, no pictures, seeds 0 and 1:
                                                         # a smoke run

Ours: `vl-train experiment=cifar10_fast seed=S`, every default, one launch per seed, timed from the
command to its exit against the 15-minute budget (start-up, the whitening fit, training, the test pass with
its test-time augmentation). Baseline: bench/airbench94_cpu.py (airbench94 ported to the CPU with the fewest
changes) with the same seed and the precision ours resolves to, launched right after ours, also timed launch to
exit; its own clock (airbench's: the whitening fit, training and the TTA test pass) is in its row too. What
test-time augmentation bought is measured on the first seed's saved model, rescored by `vl-eval` with each
`trainer.tta`: the recipe's own setting must give back metrics.json's test/acc exactly (the check that the
rescoring is the run's test pass). What `trainer.precision=auto` bought: one epoch of seed 0 launched with it and
with 32, side by side.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from common import REPO, VL_TRAIN, Row, cifar_root, main, parser
from visionlab.training.precision import resolved
from visionlab.tta import TTA_MODES

VL_EVAL = VL_TRAIN.with_name("vl-eval")
BUDGET_S = 15 * 60
AIRBENCH = Path(__file__).with_name("airbench94_cpu.py")
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


def airbench(seed: int, precision: str, args, scratch: Path) -> tuple[float, float, float]:
    """The airbench port's run of one seed in `precision` (ours as resolved: bf16 or 32, its --precision choices):
    its test accuracy with TTA, its own seconds, and launch to exit."""
    rows_file = scratch / f"airbench-{seed}.json"
    command = [sys.executable, str(AIRBENCH), "--seeds", str(seed), "--precision", precision]
    command += ["--cifar", str(args.cifar), "--json", str(rows_file), *(["--quick"] * args.quick)]
    started = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    accuracy, timed = (row["ours"] for row in json.loads(rows_file.read_text()))
    return float(accuracy.split("%")[0]) / 100, float(timed), seconds


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
    here = resolved("auto", torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        runs, ported = {}, {}
        for seed in seeds:  # ours, then the port, seed by seed: both see the same machine
            runs[seed] = launch(["experiment=cifar10_fast", f"seed={seed}", *data], scratch / f"fast-{seed}")
            ported[seed] = airbench(seed, here, args, scratch)
            print(
                f"seed {seed}: test/acc {percent(runs[seed][0]['test/acc'])} in {runs[seed][1]:.0f} s launch to exit;"
                f" airbench94 ported {percent(ported[seed][0])} in {ported[seed][2]:.0f} s",
                flush=True,
            )
        one_epoch = [] if args.quick else ["trainer.epochs=1"]
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
    port_accuracies = [accuracy for accuracy, _, _ in ported.values()]
    if by_tta[recipe_tta] != runs[seeds[0]][0]["test/acc"]:
        raise AssertionError(
            f"vl-eval's test/acc {by_tta[recipe_tta]} is not the run's {runs[seeds[0]][0]['test/acc']}"
        )
    port = f"airbench94 ported, {here}"
    out = [
        Row(
            f"cifar10_fast: CIFAR-10 test/acc, mean (range) over seeds {args.seeds}{quick}",
            f"{percent(statistics.mean(accuracies))} ({percent(min(accuracies))}-{percent(max(accuracies))})",
            f"{percent(statistics.mean(port_accuracies))} ({port})",
            f"{100 * (statistics.mean(accuracies) - statistics.mean(port_accuracies)):+.2f} points",
        ),
        Row(
            f"cifar10_fast: launch to exit, s, by seed (budget {BUDGET_S}){quick}",
            ", ".join(f"{s:.0f}" for s in seconds),
            ", ".join(f"{s:.0f}" for _, _, s in ported.values()) + f" ({port})",
            f"{max(seconds) / BUDGET_S:.2f}x the budget at most",
        ),
    ]
    out += [
        Row(
            f"cifar10_fast seed {seed}: test/acc, epochs, launch to exit{quick}",
            f"{percent(metrics['test/acc'])}, {metrics['epochs']} epochs, {s:.0f} s",
            f"{percent(ported[seed][0])}, {ported[seed][2]:.0f} s ({ported[seed][1]:.0f} s on airbench's clock)",
            f"{100 * (metrics['test/acc'] - ported[seed][0]):+.2f} points",
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
