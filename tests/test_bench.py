"""The benchmarks run: `make bench`'s runner with --quick runs every script's smoke run once.

Speed is what the benchmarks report, never what the suite asserts: these tests check that every
script runs, that its rows land in the one table with figures in them, and that missing data
skips a benchmark with a message instead of failing it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

BENCH = REPO / "bench"


def table_rows(stdout: str) -> dict[str, list[str]]:
    """The final table's rows, by benchmark name (the first table cell)."""
    final = stdout.rsplit("## all benchmarks", 1)[1]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in final.splitlines() if line.startswith("| ")]
    return {row[0]: row[1:] for row in cells[1:]}  # without the header


@pytest.mark.slow
def test_run_all_quick_puts_every_benchmark_in_one_table(shared_data, cifar_root):
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--mnist", str(shared_data), "--cifar", str(cifar_root)],
        capture_output=True,
        text=True,
        timeout=2400,  # every bench --quick, beside the other worker
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = table_rows(done.stdout)
    assert "machine: " in done.stdout and "torch " in done.stdout and "device " in done.stdout

    def row(pattern: str) -> list[str]:
        (name,) = [name for name in rows if re.search(pattern, name)]
        return rows[name]

    ours, baseline, ratio = row(r"^MNIST CNN: time to >= 99\.0% test accuracy")
    assert re.search(r"test/acc \d+\.\d+%", ours) and re.match(r"\d+ \(extrapolated to 4 epochs", baseline)
    for model in ("MNIST linear", "MNIST mlp", "MNIST cnn", "CIFAR-10 cnn"):
        ours, baseline, ratio = row(rf"^throughput: {model}, training samples/s")
        assert (
            re.fullmatch(r"[\d,]+", ours)
            and re.match(r"[\d,]+ \(DataLoader\)", baseline)
            and re.fullmatch(r"\d+\.\dx", ratio)
        )
        ours, baseline, _ = row(rf"^throughput: {model}, data path's share")
        assert re.fullmatch(r"\d+\.\d%", ours) and re.match(r"\d+\.\d% \(DataLoader\)", baseline)
    for measure in ("training s", "whole command s"):
        ours, baseline, ratio = row(rf"^2 processes \(trainer\.devices=2.*, {measure}$")
        assert (
            re.fullmatch(r"\d+\.\d+", ours) and baseline.endswith(" (1 process)") and re.fullmatch(r"\d+\.\d\dx", ratio)
        )
    for setting in ("trainer.precision=bf16", "trainer.channels_last=false"):
        assert re.fullmatch(r"\d+\.\d\dx", row(rf"^fast path: .*{re.escape(setting)}")[2])
    for dataset in ("MNIST", "CIFAR-10"):
        ours, baseline, ratio = row(rf"^allocator: {dataset} default CNN, ms per training step")
        assert (
            re.fullmatch(r"\d+\.\d", ours)
            and re.fullmatch(r"\d+\.\d \(glibc's defaults\)", baseline)
            and re.fullmatch(r"\d+\.\d\dx faster", ratio)
        )
        ours, baseline, _ = row(rf"^allocator: {dataset} default CNN, page faults per training step")
        assert re.fullmatch(r"[\d,]+", ours) and re.fullmatch(r"[\d,]+ \(glibc's defaults\)", baseline)
    ours, baseline, overhead = row(r"^start-up: command to the end of training step 1")
    assert (
        ours.endswith("(vl-train)")
        and baseline.endswith("(bare script)")
        and re.fullmatch(r"[+-]\d+\.\d\d s overhead", overhead)
    )
    for dataset in ("MNIST", "CIFAR-10"):
        ours, baseline, _ = row(rf"^memory: peak RSS, {dataset} CNN")
        assert re.fullmatch(r"[\d,]+", ours) and "torch alone" in baseline
    ours, baseline, agreement = row(r"^kNN MNIST vs scikit-learn brute force: L2, k=3: test accuracy")
    assert agreement.startswith("agreement") and ours.endswith("%") and baseline.endswith("%")
    for distance in ("L2", "L1"):
        ours, baseline, ratio = row(rf"^kNN MNIST vs faiss-cpu IndexFlat: {distance}, k=3: fit \+ predict")
        assert (
            re.fullmatch(r"\d+\.\d", ours)
            and re.fullmatch(r"\d+\.\d", baseline)
            and re.fullmatch(r"\d+\.\d\dx faster", ratio)
        )
        assert row(rf"^kNN MNIST vs faiss-cpu IndexFlat: {distance}, k=3: predictions")[2].startswith(
            "equal wherever unambiguous; "
        )
    ours, baseline, ratio = row(r"^pruned search: .*, successive_halving pruner, wall s")
    assert re.fullmatch(r"\d+ \(\d+ pruned, \d+ epochs\)", ours) and re.fullmatch(
        r"\d+ \(no pruner: 6 epochs\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d\dx the time", ratio)
    ours, _, points = row(r"^pruned search: .*, successive_halving pruner, best val/acc")
    assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"[+-]\d+\.\d\d points", points)
    for tree in (r"CIFAR-10 JPEGs 32x32", r"the same as 128x128 JPEGs"):
        ours, baseline, ratio = row(rf"^folder: {tree} \([^)]*\), first decode into the cache, images/s")
        assert (
            re.fullmatch(r"[\d,]+ \(600 in \d+\.\d\d s\)", ours)
            and "ImageFolder + DataLoader(num_workers=2), one epoch: 500 in" in baseline
        )
        assert re.fullmatch(r"\d+\.\d\dx", ratio)
        ours, baseline, ratio = row(rf"^folder: {tree} \([^)]*\), second run: the cache read back")
        assert re.fullmatch(
            r"\d+\.\d\d s \(\d+\.\d\d s CPU; median of 5: (\d+\.\d\d, ){4}\d+\.\d\d; 600 images, same pixels\)", ours
        )
        assert re.fullmatch(r"\d+x faster", ratio)
    ours, baseline, ratio = row(r"^folder: the same as 128x128 JPEGs \([^)]*\) to 32x32, first decode")
    assert (
        re.fullmatch(r"[\d,]+ \(600 in \d+\.\d\d s\)", ours)
        and "Resize((32, 32))" in baseline
        and re.fullmatch(r"\d+\.\d\dx", ratio)
    )
    ours, baseline, overhead = row(r"^pictures: the default job, launch to exit, every picture on vs off")
    assert (
        re.match(r"\d+\.\d\d \(on: ", ours)
        and re.match(r"\d+\.\d\d \(off: ", baseline)
        and re.fullmatch(r"[+-]\d+\.\d%", overhead)
    )
    ours, baseline, share = row(r"^pictures: issue 19's saliency, embedding and layer table")
    assert re.match(
        r"-?\d+\.\d{3} \(layer table \d+\.\d{3}, saliency picture \d+\.\d{3}, embedding", ours
    ) and re.fullmatch(r"-?\d+\.\d%", share)
    ours, baseline, share = row(r"^lr_find: the range test on the default CNN")
    assert re.fullmatch(r"\d+\.\d\d \(\d+\.\d; \d+ steps\)", ours) and re.fullmatch(
        r"\d+\.\d\d \(\d+\.\d; \d+ steps\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d% of the run", share)
    ours, baseline, points = row(r"^lr_find: one epoch at the suggested lr")
    assert re.match(r"\d+\.\d\d% \(optimizer\.lr=", ours) and re.fullmatch(r"[+-]\d+\.\d\d points", points)
    for dataset in ("MNIST", "CIFAR-10 as 28x28 grey"):
        ours, baseline, points = row(rf"^cnn recipe, {dataset}.*: test/acc \(epochs, run seconds\) --quick")
        assert re.fullmatch(r"\d+\.\d\d% \(\d+ epochs?, \d+\.\d s\)", ours) and re.fullmatch(
            r"\d+\.\d\d% \(1 epoch, \d+\.\d s\) \(one epoch\)", baseline
        )
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, ratio = row(r"^folder runs: model=cnn, 1 epoch, --quick, run seconds")
    assert (
        re.fullmatch(r"\d+\.\d", ours)
        and baseline.endswith("(dataset=cifar10)")
        and re.match(r"\d+\.\d\dx \(rounds: ", ratio)
    )
    ours, baseline, points = row(r"^folder runs: model=knn test/acc")
    assert (
        re.match(r"\d+\.\d\d% \(", ours)
        and baseline.endswith("(dataset=cifar10)")
        and re.fullmatch(r"[+-]\d+\.\d\d points", points)
    )
    for setting in ("trainer.threads unset", r"each trainer.threads=\d+"):
        ours, baseline, ratio = row(rf"^many runs: two at once, {setting} \(--quick")
        assert re.fullmatch(r"\d+\.\d", ours) and re.fullmatch(
            r"\d+\.\d \(one after the other: \d+\.\d \+ \d+\.\d\)", baseline
        )
        assert re.fullmatch(r"\d+\.\d\dx the serial time", ratio)
    ours, baseline, ratio = row(r"^many runs: a 2-job optimizer\.lr sweep, hydra/launcher=joblib n_jobs=\d+ \(--quick")
    assert re.fullmatch(r"\d+\.\d", ours) and re.fullmatch(
        r"\d+\.\d \(the basic launcher: one job after the other\)", baseline
    )
    assert re.fullmatch(r"\d+\.\d\dx the serial time", ratio)
    ours, baseline, points = row(r"^cifar10_fast: CIFAR-10 test/acc, mean \(range\) over seeds 0,1 --quick")
    assert re.fullmatch(r"\d+\.\d\d% \(\d+\.\d\d%-\d+\.\d\d%\)", ours) and baseline.endswith(
        "(cifar10_resnet_small, seed 0)"
    )
    assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, share = row(r"^cifar10_fast: launch to exit, s, by seed \(budget 1500\)")
    assert re.fullmatch(r"\d+, \d+", ours) and re.fullmatch(r"\d\.\d\dx the budget at most", share)
    ours, _, points = row(r"^cifar10_fast seed 0's model: test/acc by trainer.tta")
    assert re.fullmatch(r"none \d+\.\d\d%, flip \d+\.\d\d%, flip_translate \d+\.\d\d%", ours) and points.endswith(
        "(flip_translate)"
    )
    ours, baseline, ratio = row(
        r"^cifar10_fast: one epoch, launch to exit, s, trainer.precision=auto \((bf16|32) here\) against 32 --quick"
    )
    assert re.fullmatch(r"\d+", ours) and re.fullmatch(r"\d+", baseline) and re.fullmatch(r"\d+\.\d\dx", ratio)
    ours, baseline, _ = row(r"^photos: 12 of 1008x756, model=cnn defaults --quick")
    assert re.fullmatch(
        r"[\d,]+ MiB peak, \d+\.\d s, run folder [\d,]+\.\d MiB, test/acc \d+\.\d%", ours
    ) and baseline.endswith("(dataset.max_side=null)")
    for model in ("linear", "mlp", "cnn", "knn"):
        assert row(rf"^photos: 30 of 160x120, model={model} defaults --quick")[0].startswith(tuple("0123456789"))
    network_rows = [
        *(("CIFAR-10", f) for f in ("HOG+colour", "bag of words", "the CIFAR-10 CNN's penultimate layer")),
        ("MNIST", "the MNIST CNN's penultimate layer"),
    ]
    for model in ("kNN", "linear"):
        for dataset, features in network_rows:
            named = rf"^network features: {dataset}, {re.escape(features)}, {model} test/acc --quick"
            ours, baseline, points = row(named)
            assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"\d+\.\d\d% \(pixels\)", baseline)
            assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
        ours, baseline, points = row(
            rf"^network features: transfer, the MNIST CNN's penultimate layer on .+, {model} test/acc --quick"
        )
        assert re.fullmatch(r"\d+\.\d\d%", ours) and re.fullmatch(r"\d+\.\d\d% \(its pixels\)", baseline)
        assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    ours, baseline, points = row(r"^network features: CIFAR-10, model=cnn itself against a linear classifier")
    assert re.fullmatch(r"\d+\.\d\d% \(\d+ epochs?\)", ours) and re.fullmatch(
        r"\d+\.\d\d% \(linear on its penultimate layer\)", baseline
    )
    assert re.fullmatch(r"[+-]\d+\.\d\d points", points)
    assert not [name for name, cells in rows.items() if "failed" in cells[0] or "skipped" in cells[0]]


def test_missing_data_skips_a_benchmark_with_its_reason(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "startup.py"),
            "--quick",
            "--mnist",
            str(tmp_path / "nowhere"),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())
    assert row["benchmark"] == "start-up"
    assert (
        row["ours"].startswith("skipped: MNIST not found")
        and str(tmp_path / "nowhere" / "MNIST" / "raw") in row["ours"]
    )
    assert "skipped: MNIST not found" in done.stderr
