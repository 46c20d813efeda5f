"""kNN on MNIST (raw pixels 0-255, 60,000 train / 10,000 test): visionlab's KNN beside faiss-cpu's exact
`IndexFlat` (L2 and L1) and scikit-learn's `KNeighborsClassifier(algorithm="brute", n_jobs=-1)`.

    .venv/bin/python bench/knn_mnist.py                 # the full benchmark (about 10 minutes on 2 cores)
    .venv/bin/python bench/knn_mnist.py --parts faiss   # against faiss alone (about 4 minutes)
    .venv/bin/python bench/knn_mnist.py --quick         # a smoke run on 2,000 train / 200 test images
    .venv/bin/python bench/knn_mnist.py --parts l2,sweep --repeat 3   # some parts; fastest of 3 runs

Against faiss (the `bench` extra: `pip install -e '.[bench]'`): L2 (`IndexFlatL2`) and L1
(`IndexFlat(d, METRIC_L1)`), k=3, float32 as faiss takes them, fit + prediction of the whole test set,
both in one fresh process after a warm-up, in alternating rounds (ours, faiss, faiss, ours, ...: a
load that comes and goes falls on both), the fastest round of each kept. The bench asserts that both
found the same k-th neighbour distance for every test image, and that their predictions are equal
wherever the k nearest are unambiguous (no other image at the k-th distance); it counts the rest.

Against scikit-learn: L2 with k=3 (accuracy, agreement, time of fit + prediction of the whole test set, peak
memory), L1 with k=3 against metric="manhattan", and the cost of scoring 10 values of k in one search
against a single k. Every measurement runs in a fresh subprocess that first loads the uint8 images;
peak memory is the growth of the resident set (VmHWM, reset through /proc/self/clear_refs just before
the measured part, so it is exact, not sampled) over the resident set at that point: Linux only.
scikit-learn's L1 brute force takes over 5 minutes on the full test set on 2 cores, so it is timed
on the first --l1-baseline-queries test images and extrapolated linearly (brute force is linear in
the number of queries); ours is timed on the same subset too, and on the full set.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import Row, Skipped, main, mnist_root, parser

SWEEP = list(range(1, 20, 2))  # 10 values of k


def load(data: Path, n_train: int, n_test: int):
    import torchvision

    train, test = (torchvision.datasets.MNIST(str(data), train=t, download=False) for t in (True, False))
    return (
        train.data[:n_train].numpy(),
        train.targets[:n_train].numpy(),
        test.data[:n_test].numpy(),
        test.targets[:n_test].numpy(),
    )


def resident_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def fit_predict(job: dict, x_train, y_train, x_test) -> tuple[np.ndarray, float, object]:
    """Predictions for x_test, the seconds the fit took, the model; ours in batches of 1,024 like vl-train."""
    started = time.perf_counter()
    if job["method"] == "sklearn":
        from sklearn.neighbors import KNeighborsClassifier

        metric = {"l2": "euclidean", "l1": "manhattan"}[job["distance"]]
        model = KNeighborsClassifier(job["k"], algorithm="brute", metric=metric, n_jobs=-1)
        model.fit(x_train.reshape(len(x_train), -1).astype(np.float32), y_train)
        fit_seconds = time.perf_counter() - started
        return model.predict(x_test.reshape(len(x_test), -1).astype(np.float32)), fit_seconds, model
    import torch

    from visionlab.data import DeviceSplit
    from visionlab.models.knn import KNN

    raw_pixels = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)  # scale 1, shift 0: no normalization
    train = DeviceSplit(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train), *raw_pixels)
    model = KNN((1, 28, 28), 10, k=job["k"], distance=job["distance"])
    model.fit(train)
    fit_seconds = time.perf_counter() - started
    with torch.inference_mode():
        images = torch.from_numpy(x_test).unsqueeze(1).float()
        return torch.cat([model(batch).argmax(1) for batch in images.split(1024)]).numpy(), fit_seconds, model


def faiss_predict(distance: str, k: int, x_train, y_train, x_test) -> tuple[np.ndarray, np.ndarray]:
    """faiss's exact flat index: predictions by the same vote as ours (ties: the lowest class), and the
    distances of the k + 1 nearest (L2 squared, as faiss gives them)."""
    import faiss

    index = (
        faiss.IndexFlatL2(x_train[0].size) if distance == "l2" else faiss.IndexFlat(x_train[0].size, faiss.METRIC_L1)
    )
    index.add(x_train.reshape(len(x_train), -1).astype(np.float32))
    distances, indices = index.search(x_test.reshape(len(x_test), -1).astype(np.float32), k + 1)
    votes = np.zeros((len(x_test), int(y_train.max()) + 1), dtype=np.int64)
    np.add.at(votes, (np.arange(len(x_test))[:, None], y_train[indices[:, :k]]), 1)
    return votes.argmax(1), distances


def ours_predict(distance: str, k: int, x_train, y_train, x_test) -> tuple[np.ndarray, np.ndarray]:
    """visionlab's KNN: fit, then predictions and neighbour distances in batches of 1,024 (as vl-train)."""
    import torch

    from visionlab.data import DeviceSplit
    from visionlab.models.knn import KNN

    raw_pixels = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    model = KNN((1, *x_train.shape[1:]), int(y_train.max()) + 1, k=k, distance=distance)
    model.fit(DeviceSplit(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train), *raw_pixels))
    predictions, distances = [], []
    with torch.inference_mode():
        for batch in torch.from_numpy(x_test).unsqueeze(1).float().split(1024):
            found = model.neighbours(batch, k)
            predictions.append(model.vote(*found, (k,))[:, 0].argmax(1))
            distances.append(found[0])
    return torch.cat(predictions).numpy(), torch.cat(distances).numpy()


def versus_faiss(job: dict, x_train, y_train, x_test) -> dict:
    """Both sides in this process, warm, in alternating rounds; the fastest of each, and the comparison."""
    sides = {"ours": ours_predict, "faiss": faiss_predict}
    for predict in sides.values():  # warm-up: libraries paged in, threads started
        predict(job["distance"], job["k"], x_train[:200], y_train[:200], x_test[:20])
    seconds = {name: [] for name in sides}
    results = {}
    for round_ in range(job["rounds"]):
        for name in ("ours", "faiss") if round_ % 2 == 0 else ("faiss", "ours"):
            started = time.perf_counter()
            results[name] = sides[name](job["distance"], job["k"], x_train, y_train, x_test)
            seconds[name].append(time.perf_counter() - started)
    (ours, our_distances), (theirs, their_distances) = results["ours"], results["faiss"]
    k = job["k"]
    kth = our_distances[:, k - 1] ** 2 if job["distance"] == "l2" else our_distances[:, k - 1]
    # faiss's L2 comes from float32 products of values up to 255: its squared distances are off by a few units
    tolerance = 1e-5 * kth if job["distance"] == "l2" else 0
    assert (np.abs(their_distances[:, k - 1] - kth) <= tolerance).all(), (
        "faiss and ours disagree on a k-th neighbour distance"
    )
    # another image at the k-th distance
    ambiguous = np.abs(their_distances[:, k] - their_distances[:, k - 1]) <= tolerance
    assert (ours == theirs)[~ambiguous].all(), "faiss and ours predict differently where the k nearest are unambiguous"
    return {
        "seconds": {name: min(times) for name, times in seconds.items()},
        "rounds": seconds,
        "ambiguous": int(ambiguous.sum()),
        "disagree": int((ours != theirs).sum()),
        "accuracy": None,
    }


def sweep(job: dict, x_train, y_train, x_test, y_test) -> dict:
    """Seconds to predict with k=1 alone, then with every k of the sweep from one search (after a warm-up)."""
    import torch

    from visionlab.data import DeviceSplit
    from visionlab.models.knn import KNN

    raw_pixels = torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1)
    model = KNN((1, 28, 28), 10, k=SWEEP)
    model.fit(DeviceSplit(torch.from_numpy(x_train).unsqueeze(1), torch.from_numpy(y_train), *raw_pixels))
    images, labels = torch.from_numpy(x_test).unsqueeze(1).float(), torch.from_numpy(y_test)
    seconds = {}
    with torch.inference_mode():
        model.scores_by_k(images[:64])  # warm-up
        for name, predict in [
            ("single", model),
            ("sweep", model.scores_by_k),
            ("single again", model),
            ("sweep again", model.scores_by_k),
        ]:
            started = time.perf_counter()
            scores = [predict(batch) for batch in images.split(1024)]
            seconds[name] = time.perf_counter() - started
    accuracy = {k: float(torch.cat([s[k].argmax(1) for s in scores]).eq(labels).double().mean()) for k in model.ks}
    return {
        "single_seconds": min(seconds["single"], seconds["single again"]),
        "sweep_seconds": min(seconds["sweep"], seconds["sweep again"]),
        "accuracy_by_k": accuracy,
    }


def worker(job: dict) -> dict:
    """One measurement in this (fresh) process: fit + predict, time and peak memory growth."""
    x_train, y_train, x_test, y_test = load(Path(job["data"]), job["train"], job["test"])
    x_test, y_test = x_test[: job.get("queries")], y_test[: job.get("queries")]
    if job.get("sweep"):
        return sweep(job, x_train, y_train, x_test, y_test)
    if job.get("versus") == "faiss":
        return versus_faiss(job, x_train, y_train, x_test)
    fit_predict(job, x_train[:200], y_train[:200], x_test[:20])  # warm-up: libraries paged in, threads started
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current resident set
    before = resident_mb("VmRSS")
    started = time.perf_counter()
    predictions, fit_seconds, model = fit_predict(job, x_train, y_train, x_test)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "fit_seconds": fit_seconds,
        "predict_seconds": seconds - fit_seconds,
        "peak_mb": resident_mb("VmHWM") - before,
        "accuracy": float((predictions == y_test).mean()),
        "predictions": predictions.tolist(),
        "stated_mb": (model.train_features.nbytes + x_test.size * 4 + model.scratch_bytes()) / 2**20
        if job["method"] == "ours"
        else None,
    }


def measure(repeat: int = 1, **job) -> dict:
    """The job in fresh subprocesses, `repeat` times; the fastest run (the machine may be shared)."""
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True, check=True
        )
        runs.append(json.loads(out.stdout.splitlines()[-1]))
    return min(runs, key=lambda run: run.get("seconds", run.get("sweep_seconds")))


def progress(rows: list[tuple[str, ...]]) -> None:
    for row in rows:
        print("  " + " | ".join(row), flush=True)


def l2_rows(sizes: dict, repeat: int) -> list[tuple[str, ...]]:
    ours, theirs = (
        measure(repeat, method="ours", distance="l2", k=3, **sizes),
        measure(repeat, method="sklearn", distance="l2", k=3, **sizes),
    )
    agreement = np.mean(np.array(ours["predictions"]) == np.array(theirs["predictions"]))
    return [
        (
            "L2, k=3: test accuracy",
            f"{ours['accuracy']:.2%}",
            f"{theirs['accuracy']:.2%}",
            f"agreement {agreement:.2%}",
        ),
        (
            "L2, k=3: fit + predict, seconds",
            f"{ours['seconds']:.1f}",
            f"{theirs['seconds']:.1f}",
            f"{theirs['seconds'] / ours['seconds']:.1f}x faster",
        ),
        (
            "L2, k=3: peak memory growth, MiB",
            f"{ours['peak_mb']:.0f} (stored set + test images + stated scratch bound: {ours['stated_mb']:.0f})",
            f"{theirs['peak_mb']:.0f}",
            f"{ours['peak_mb'] / theirs['peak_mb']:.2f}",
        ),
    ]


def l1_rows(sizes: dict, queries: int) -> list[tuple[str, ...]]:
    ours = measure(method="ours", distance="l1", k=3, **sizes)
    # a subset of every test image (--quick's) is the same job again
    ours_part = (
        ours if queries == sizes["test"] else measure(method="ours", distance="l1", k=3, queries=queries, **sizes)
    )
    theirs_part = measure(method="sklearn", distance="l1", k=3, queries=queries, **sizes)
    theirs_all = theirs_part["fit_seconds"] + theirs_part["predict_seconds"] * sizes["test"] / queries
    agreement = np.mean(np.array(ours_part["predictions"]) == np.array(theirs_part["predictions"]))
    extrapolated = f" (extrapolated from {queries})" if queries < sizes["test"] else ""
    return [
        (
            "L1, k=3: test accuracy",
            f"{ours['accuracy']:.2%}",
            f"{theirs_part['accuracy']:.2%} (first {queries})",
            f"agreement {agreement:.2%} (first {queries})",
        ),
        (
            f"L1, k=3: fit + predict the first {queries} test images, seconds",
            f"{ours_part['seconds']:.1f}",
            f"{theirs_part['seconds']:.1f}",
            f"{theirs_part['seconds'] / ours_part['seconds']:.2f}x faster",
        ),
        (
            "L1, k=3: fit + predict all test images, seconds",
            f"{ours['seconds']:.1f}",
            f"{theirs_all:.0f}{extrapolated}",
            f"{theirs_all / ours['seconds']:.2f}x faster",
        ),
        (
            "L1, k=3: peak memory growth, MiB",
            f"{ours['peak_mb']:.0f}",
            f"{theirs_part['peak_mb']:.0f} (first {queries})",
            "",
        ),
    ]


def faiss_rows(sizes: dict, rounds: int) -> list[tuple[str, ...]]:
    found = []
    for distance in ("l2", "l1"):
        run = measure(versus="faiss", distance=distance, k=3, rounds=rounds, **sizes)
        ours, theirs = run["seconds"]["ours"], run["seconds"]["faiss"]
        rounds_shown = "; rounds " + ", ".join(
            f"{a:.1f}/{b:.1f}" for a, b in zip(run["rounds"]["ours"], run["rounds"]["faiss"])
        )
        found.append(
            (
                f"{distance.upper()}, k=3: fit + predict all test images, seconds (fastest of {rounds} rounds; "
                f"ours/faiss{rounds_shown})",
                f"{ours:.1f}",
                f"{theirs:.1f}",
                f"{theirs / ours:.2f}x faster",
            )
        )
        found.append(
            (
                f"{distance.upper()}, k=3: predictions",
                "",
                "",
                f"equal wherever unambiguous; {run['disagree']} differ of {run['ambiguous']} with another image at "
                "the k-th distance",
            )
        )
    return found


def sweep_rows(sizes: dict, repeat: int) -> list[tuple[str, ...]]:
    sweep = measure(repeat, method="ours", sweep=True, **sizes)
    best = max(sweep["accuracy_by_k"], key=lambda k: (sweep["accuracy_by_k"][k], -int(k)))
    return [
        (
            f"L2: predict with {len(SWEEP)} values of k ({SWEEP[0]}..{SWEEP[-1]}) from one search vs k=1 alone, "
            "seconds",
            f"{sweep['sweep_seconds']:.1f}",
            f"{sweep['single_seconds']:.1f}",
            f"{sweep['sweep_seconds'] / sweep['single_seconds']:.2f}x",
        ),
        (
            "L2: test accuracy by k (for reference; vl-train chooses k on val)",
            " ".join(f"{k}:{a:.2%}" for k, a in sweep["accuracy_by_k"].items()),
            "",
            f"best k={best}",
        ),
    ]


def faiss_version() -> str:
    try:
        import faiss
    except ImportError:
        raise Skipped(
            "faiss is not installed: pip install -e '.[bench]' (the benchmarks' extra) brings faiss-cpu"
        ) from None
    return faiss.__version__


def rows(args) -> list[Row]:
    """Every part's rows, named as kNN rows against scikit-learn for bench/run_all.py's one table."""
    import sklearn

    data = mnist_root(args.mnist)
    if args.quick:  # a smoke run shares the cores (the test suite's): its workers' idle OpenMP threads sleep, not spin
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    sizes = {"data": str(data), "train": 2000 if args.quick else 60000, "test": 200 if args.quick else 10000}
    parts = {
        "faiss": lambda: faiss_rows(sizes, args.rounds),
        "l2": lambda: l2_rows(sizes, args.repeat),
        "l1": lambda: l1_rows(sizes, min(args.l1_baseline_queries, sizes["test"])),
        "sweep": lambda: sweep_rows(sizes, args.repeat),
    }
    print(
        f"kNN on MNIST, {sizes['train']:,} train / {sizes['test']:,} test, raw pixels; baselines: faiss-cpu "
        f"{faiss_version() if 'faiss' in args.parts else '(not run)'} IndexFlat, scikit-learn {sklearn.__version__} "
        "KNeighborsClassifier(algorithm='brute', n_jobs=-1)",
        flush=True,
    )
    quick = " (--quick: 2,000 train / 200 test)" if args.quick else ""
    found = []
    for part in args.parts.split(","):
        new = parts[part]()
        progress(new)
        # the sweep rows name their own baseline
        against = {"sweep": "", "faiss": " vs faiss-cpu IndexFlat"}.get(part, " vs scikit-learn brute force")
        found += [Row(f"kNN MNIST{against}: {name}{quick}", *figures) for name, *figures in new]
    return found


if __name__ == "__main__":
    cli = parser(__doc__.split("\n\n")[0])
    cli.add_argument("--parts", default="faiss,l2,l1,sweep", help="which benchmarks, comma-separated (default: all)")
    cli.add_argument(
        "--rounds", type=int, default=2, help="alternating rounds of each side against faiss; the fastest is kept"
    )
    cli.add_argument("--repeat", type=int, default=1, help="runs of each L2 and sweep measurement; the fastest is kept")
    cli.add_argument("--l1-baseline-queries", type=int, default=500, help="test images scikit-learn's L1 is timed on")
    cli.add_argument("--worker", help=argparse.SUPPRESS)
    arguments = cli.parse_args()
    if arguments.worker:
        print(json.dumps(worker(json.loads(arguments.worker))))
    else:
        main("kNN on MNIST", rows, arguments)
