"""The smoke runs of the benchmarks of recipes: cifar10_fast, and networks as features (airbench94 ported to the
CPU: test_run_all.py)."""

from __future__ import annotations

import re

import pytest

from tests.bench.quick import quick_rows

pytestmark = pytest.mark.slow


def test_cifar10_fast(shared_data, cifar_root, tmp_path):
    rows = quick_rows("cifar10_fast", shared_data, cifar_root, tmp_path)
    port = r"\(airbench94 ported, (bf16|32)\)"
    ours, baseline, points = rows.row(r"^cifar10_fast: CIFAR-10 test/acc, mean \(range\) over seeds 0,1 --quick")
    assert re.fullmatch(r"\d+\.\d\d% \(\d+\.\d\d%-\d+\.\d\d%\)", ours)
    assert re.fullmatch(rf"\d+\.\d\d% {port}", baseline) and re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, share = rows.row(r"^cifar10_fast: launch to exit, s, by seed \(budget 900\)")
    assert re.fullmatch(r"\d+, \d+", ours) and re.fullmatch(rf"\d+, \d+ {port}", baseline)
    assert re.fullmatch(r"\d\.\d\dx the budget at most", share)
    for seed in (0, 1):  # each seed beside the port's run of the same seed
        ours, baseline, points = rows.row(rf"^cifar10_fast seed {seed}: test/acc, epochs, launch to exit --quick")
        assert re.fullmatch(r"\d+\.\d\d%, 1 epochs?, \d+ s", ours)
        assert re.fullmatch(r"\d+\.\d\d%, \d+ s \(\d+ s on airbench's clock\)", baseline)
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, _, points = rows.row(r"^cifar10_fast seed 0's model: test/acc by trainer.tta")
    assert re.fullmatch(r"none \d+\.\d\d%, flip \d+\.\d\d%, flip_translate \d+\.\d\d%", ours) and points.endswith(
        "(flip_translate)"
    )
    ours, baseline, ratio = rows.row(
        r"^cifar10_fast: one epoch, launch to exit, s, trainer.precision=auto \((bf16|32) here\) against 32 --quick"
    )
    assert re.fullmatch(r"\d+", ours) and re.fullmatch(r"\d+", baseline) and re.fullmatch(r"\d+\.\d\dx", ratio)


def test_network_features(shared_data, cifar_root, tmp_path):
    rows = quick_rows("features_network", shared_data, cifar_root, tmp_path)
    network_rows = [
        *(("CIFAR-10", f) for f in ("HOG+colour", "bag of words", "the CIFAR-10 CNN's penultimate layer")),
        ("MNIST", "the MNIST CNN's penultimate layer"),
    ]
    for model in ("kNN", "linear"):
        for dataset, features in network_rows:
            named = rf"^network features: {dataset}, {re.escape(features)}, {model} test/acc --quick"
            ours, baseline, points = rows.row(named)
            assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"\d+\.\d\d% \(pixels\)", baseline)
            assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
        ours, baseline, points = rows.row(
            rf"^network features: transfer, the MNIST CNN's penultimate layer on .+, {model} test/acc --quick"
        )
        assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"\d+\.\d\d% \(its pixels\)", baseline)
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, points = rows.row(r"^network features: CIFAR-10, model=cnn itself against a linear classifier")
    assert re.fullmatch(r"\d+\.\d\d% \(\d+ epochs?\)", ours) and re.fullmatch(
        r"\d+\.\d\d% \(linear on its penultimate layer\)", baseline
    )
    assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
