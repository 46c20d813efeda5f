"""The smoke runs of the benchmarks of searches and runs side by side: pruning, the lr range test, the recipe's
epoch budget, several runs on one machine."""

from __future__ import annotations

import re

import pytest

from tests.bench.quick import quick_rows

pytestmark = pytest.mark.slow


def test_pruned_search(shared_data, cifar_root, tmp_path):
    rows = quick_rows("pruned_search", shared_data, cifar_root, tmp_path)
    ours, baseline, ratio = rows.row(r"^pruned search: .*, successive_halving pruner, wall s")
    assert re.fullmatch(r"\d+ \(\d+ pruned, \d+ epochs\)", ours) and re.fullmatch(
        r"\d+ \(no pruner: 6 epochs\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d\dx the time", ratio)
    ours, _, points = rows.row(r"^pruned search: .*, successive_halving pruner, best val/acc")
    assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"[+-]\d+\.\d\d points", points)


def test_lr_find(shared_data, cifar_root, tmp_path):
    rows = quick_rows("lr_find", shared_data, cifar_root, tmp_path)
    ours, baseline, share = rows.row(r"^lr_find: the range test on the default CNN")
    assert re.fullmatch(r"\d+\.\d\d \(\d+\.\d; \d+ steps\)", ours) and re.fullmatch(
        r"\d+\.\d\d \(\d+\.\d; \d+ steps\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d% of the run", share)
    ours, baseline, points = rows.row(r"^lr_find: one epoch at the suggested lr")
    assert re.match(r"\d+\.\d\d% \(optimizer\.lr=", ours) and re.fullmatch(r"[+-]\d+\.\d\d points", points)


def test_recipe_budget(shared_data, cifar_root, tmp_path):
    rows = quick_rows("recipe_budget", shared_data, cifar_root, tmp_path)
    run = r"\d+\.\d\d% \((\d+) epochs?, (\d+) steps, \d+\.\d s\)"
    folder = "a folder of 3 classes x 30 --quick"
    for model, dataset in [("cnn", "MNIST --quick"), ("linear", folder), ("cnn", folder)]:
        ours, longer, points = rows.row(rf"^epoch budget, {model}, {dataset}.*: test/acc \(epochs, steps, run s\)")
        budget, fixed = re.fullmatch(run, ours), re.fullmatch(run + ", fixed", longer)
        assert budget and fixed and int(fixed[1]) == 3 * int(budget[1])
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    for model in ("linear", "cnn"):  # a folder of 72 training images: 1 step an epoch, so the budget's 4 steps
        ours, before, _ = rows.row(rf"^epoch budget, {model}, a folder .*: against the default before it")
        assert re.fullmatch(run, ours)[2] == "4" and re.fullmatch(run + ", before", before)


def test_many_runs(shared_data, cifar_root, tmp_path):
    rows = quick_rows("many_runs", shared_data, cifar_root, tmp_path)
    for setting in ("trainer.threads unset", r"each trainer.threads=\d+"):
        ours, baseline, ratio = rows.row(rf"^many runs: two at once, {setting} \(--quick")
        assert re.fullmatch(r"\d+\.\d", ours) and re.fullmatch(
            r"\d+\.\d \(one after the other: \d+\.\d \+ \d+\.\d\)", baseline
        )
        assert re.fullmatch(r"\d+\.\d\dx the serial time", ratio)
    ours, baseline, ratio = rows.row(
        r"^many runs: a 2-job optimizer\.lr sweep, hydra/launcher=joblib n_jobs=\d+ \(--quick"
    )
    assert re.fullmatch(r"\d+\.\d", ours) and re.fullmatch(
        r"\d+\.\d \(the basic launcher: one job after the other\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d\dx the serial time", ratio)
