"""The bag of visual words on CIFAR-10 (`experiment=cifar10_bow`'s features, conf/features/cifar10_bow/bow.yaml):
learning the codebook and encoding images, visionlab's batched tensor code beside scikit-learn
and a per-image NumPy loop.

    .venv/bin/python bench/bow_cifar10.py --root .cache/cifar10                     # 1 thread, as the experiment runs
    .venv/bin/python bench/bow_cifar10.py --root .cache/cifar10 --threads 2 --images 5000

Codebook: the same whitened training patches clustered by our `kmeans` and by scikit-learn's
`KMeans(init="random", n_init=1, max_iter=iterations, algorithm="lloyd")`, timed and compared by
inertia. Encoding: `BagOfWords.__call__` on the first --images training images, from uint8 images
in memory to the pooled float32 codes, beside the same computation image by image in NumPy
(sliding_window_view, then the same normalization, whitening, distances, triangle and pooling)
on the first --baseline-images, extrapolated linearly. Both sides run warm.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import compose_train  # noqa: E402  (the repository's real config)
from visionlab.config import build  # noqa: E402
from visionlab.data.cifar10 import CIFAR10  # noqa: E402
from visionlab.features.bow import CONTRAST_EPS, BagOfWords  # noqa: E402
from visionlab.features.kmeans import kmeans  # noqa: E402


def baseline(bow: BagOfWords, images: np.ndarray) -> np.ndarray:
    """The pooled triangle codes, one image at a time in NumPy (float64)."""
    p, s, g = bow.patch_size, bow.stride, bow.pool_grid
    mean, whitening, codebook = (t.double().numpy() for t in (bow.mean, bow.whitening, bow.codebook))
    rows = []
    for image in images.astype(np.float64):
        windows = np.lib.stride_tricks.sliding_window_view(image, (p, p), axis=(1, 2))[:, ::s, ::s]  # [C, R, Q, p, p]
        r, q = windows.shape[1:3]
        x = windows.transpose(1, 2, 0, 3, 4).reshape(r * q, -1)
        x = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + CONTRAST_EPS)
        x = (x - mean) @ whitening
        distance = np.sqrt(np.maximum((x**2).sum(1, keepdims=True) - 2 * x @ codebook.T + (codebook**2).sum(1), 0))
        codes = np.maximum(distance.mean(1, keepdims=True) - distance, 0).reshape(r, q, -1)
        region_rows, region_cols = np.arange(r) * g // r, np.arange(q) * g // q
        rows.append(
            np.stack(
                [codes[region_rows == i][:, region_cols == j].sum((0, 1)) for i in range(g) for j in range(g)]
            ).ravel()
        )
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO / ".cache" / "cifar10"), help="folder holding cifar-10-batches-py/")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=2000, help="training images our encoding is timed on")
    parser.add_argument(
        "--baseline-images", type=int, default=100, help="images the NumPy loop is timed on (then extrapolated)"
    )
    args = parser.parse_args()
    from sklearn import __version__ as sklearn_version
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency: its OpenMP threads, as many as ours

    torch.set_num_threads(args.threads)
    raw = CIFAR10(root=args.root, download=False).read()
    bow: BagOfWords = build(
        compose_train(["experiment=cifar10_bow", "features.cache_dir=null"]), "features"
    ).extractors["bow"]
    images = raw.train.images
    print(
        f"{len(images):,} training images; {bow}; torch {torch.__version__} ({args.threads} thread(s)), "
        f"scikit-learn {sklearn_version}; load average at start {os.getloadavg()}",
        flush=True,
    )

    started = time.perf_counter()
    bow = bow.fit(images, torch.device("cpu"))
    print(
        f"fit (sampling, normalizing and whitening {bow.sample:,} patches, then k-means): "
        f"{time.perf_counter() - started:.1f} s",
        flush=True,
    )
    patches = (bow.normalized(bow.sample_patches(images)) - bow.mean) @ bow.whitening
    started = time.perf_counter()
    ours = kmeans(patches, bow.words, bow.iterations, bow.seed, bow.init)
    seconds = time.perf_counter() - started
    print(f"k-means, visionlab: {seconds:.1f} s, {ours.iterations} iterations, inertia {ours.inertia:.6g}", flush=True)
    started = time.perf_counter()
    with threadpool_limits(args.threads):
        theirs = KMeans(
            bow.words, init="random", n_init=1, max_iter=bow.iterations, algorithm="lloyd", random_state=bow.seed
        ).fit(patches.numpy())
    seconds = time.perf_counter() - started
    print(
        f"k-means, scikit-learn: {seconds:.1f} s, {theirs.n_iter_} iterations, inertia {theirs.inertia_:.6g} "
        f"(ours / theirs: {ours.inertia / theirs.inertia_:.4f})",
        flush=True,
    )

    bow(images[:8]), baseline(bow, images[:2].numpy())  # warm-up
    started = time.perf_counter()
    codes = bow(images[: args.images])
    seconds = time.perf_counter() - started
    print(
        f"encoding, visionlab: {seconds:.1f} s for {args.images:,} images "
        f"({seconds / args.images * 1000:.2f} ms per image, "
        f"{seconds / args.images * 60000 / 60:.1f} min for CIFAR-10's 60,000), codes {tuple(codes.shape)}",
        flush=True,
    )
    n = args.baseline_images
    started = time.perf_counter()
    reference = baseline(bow, images[:n].numpy())
    seconds = time.perf_counter() - started
    print(
        f"encoding, NumPy per image: {seconds:.1f} s for {n:,} images ({seconds / n * 1000:.2f} ms per image, "
        f"{seconds / n * 60000 / 60:.1f} min for 60,000, extrapolated)",
        flush=True,
    )
    difference = np.abs(codes[:n].double().numpy() - reference).max() / np.abs(reference).max()
    print(
        f"on those {n:,} images the codes differ by at most {difference:.1e} of the largest; load average at the end "
        f"{os.getloadavg()}"
    )


if __name__ == "__main__":
    main()
