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
    for dataset in ("MNIST", "CIFAR-10 as 28x28 grey"):
        ours, baseline, points = rows.row(rf"^cnn recipe, {dataset}.*: test/acc \(epochs, run seconds\) --quick")
        assert re.fullmatch(r"\d+\.\d\d% \(\d+ epochs?, \d+\.\d s\)", ours) and re.fullmatch(
            r"\d+\.\d\d% \(1 epoch, \d+\.\d s\) \(one epoch\)", baseline
        )
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)


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
