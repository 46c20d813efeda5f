"""The smoke runs of the benchmarks of data: kNN against scikit-learn and faiss, a folder's decode and cache, runs
on a folder, phone photos."""

from __future__ import annotations

import re

import pytest

from tests.bench.quick import quick_rows

pytestmark = pytest.mark.slow


def test_knn_against_scikit_learn_and_faiss(shared_data, cifar_root, tmp_path):
    rows = quick_rows("knn_mnist", shared_data, cifar_root, tmp_path)
    ours, baseline, agreement = rows.row(r"^kNN MNIST vs scikit-learn brute force: L2, k=3: test accuracy")
    assert agreement.startswith("agreement") and ours.endswith("%") and baseline.endswith("%")
    for distance in ("L2", "L1"):
        ours, baseline, ratio = rows.row(rf"^kNN MNIST vs faiss-cpu IndexFlat: {distance}, k=3: fit \+ predict")
        assert (
            re.fullmatch(r"\d+\.\d", ours)
            and re.fullmatch(r"\d+\.\d", baseline)
            and re.fullmatch(r"\d+\.\d\dx faster", ratio)
        )
        assert rows.row(rf"^kNN MNIST vs faiss-cpu IndexFlat: {distance}, k=3: predictions")[2].startswith(
            "equal wherever unambiguous; "
        )


def test_folder_decode(shared_data, cifar_root, tmp_path):
    rows = quick_rows("folder_decode", shared_data, cifar_root, tmp_path)
    for tree in (r"CIFAR-10 JPEGs 32x32", r"the same as 128x128 JPEGs"):
        ours, baseline, ratio = rows.row(rf"^folder: {tree} \([^)]*\), first decode into the cache, images/s")
        assert (
            re.fullmatch(r"[\d,]+ \(600 in \d+\.\d\d s\)", ours)
            and "ImageFolder + DataLoader(num_workers=2), one epoch: 500 in" in baseline
        )
        assert re.fullmatch(r"\d+\.\d\dx", ratio)
        ours, baseline, ratio = rows.row(rf"^folder: {tree} \([^)]*\), second run: the cache read back")
        assert re.fullmatch(
            r"\d+\.\d\d s \(\d+\.\d\d s CPU; median of 5: (\d+\.\d\d, ){4}\d+\.\d\d; 600 images, same pixels\)", ours
        )
        assert re.fullmatch(r"\d+x faster", ratio)
    ours, baseline, ratio = rows.row(r"^folder: the same as 128x128 JPEGs \([^)]*\) to 32x32, first decode")
    assert (
        re.fullmatch(r"[\d,]+ \(600 in \d+\.\d\d s\)", ours)
        and "Resize((32, 32))" in baseline
        and re.fullmatch(r"\d+\.\d\dx", ratio)
    )


def test_folder_runs(shared_data, cifar_root, tmp_path):
    rows = quick_rows("folder_runs", shared_data, cifar_root, tmp_path)
    ours, baseline, ratio = rows.row(r"^folder runs: model=cnn, 1 epoch, --quick, run seconds")
    assert (
        re.fullmatch(r"\d+\.\d", ours)
        and baseline.endswith("(dataset=cifar10)")
        and re.match(r"\d+\.\d\dx \(rounds: ", ratio)
    )
    ours, baseline, points = rows.row(r"^folder runs: model=knn test/acc")
    assert (
        re.match(r"\d+\.\d\d% \(", ours)
        and baseline.endswith("(dataset=cifar10)")
        and re.fullmatch(r"[+-]\d+\.\d\d points", points)
    )


def test_photos(shared_data, cifar_root, tmp_path):
    rows = quick_rows("photos", shared_data, cifar_root, tmp_path)
    ours, baseline, _ = rows.row(r"^photos: 12 of 504x378, model=cnn defaults --quick")
    assert re.fullmatch(
        r"[\d,]+ MiB peak, \d+\.\d s, run folder [\d,]+\.\d MiB, test/acc \d+\.\d%", ours
    ) and baseline.endswith("(dataset.max_side=null)")
    for model in ("linear", "mlp", "cnn", "knn"):
        assert rows.row(rf"^photos: 30 of 160x120, model={model} defaults --quick")[0].startswith(tuple("0123456789"))
