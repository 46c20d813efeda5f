"""HOG + colour histogram features for all 60,000 CIFAR-10 images: visionlab's batched tensor version
(`features=hog+color`, the defaults in conf/features/) beside the per-image scikit-image + matplotlib loop
it replaces.

    .venv/bin/python bench/features_cifar10.py --root .cache/cifar10            # 1 and 2 threads, fastest of 3
    .venv/bin/python bench/features_cifar10.py --root .cache/cifar10 --threads 2 --repeat 1

Ours is `Features.extract` on the CPU (no cache), timed from uint8 images in memory to the float32
[60000, 334] matrix. The baseline calls `skimage.feature.hog(channel_axis=-1)` and a 10-bin
histogram of matplotlib's `rgb_to_hsv` hue per image, over all 60,000 images (half a minute), or
over the first --baseline-images and extrapolated linearly (it is a per-image loop). Both sides run
warm: the libraries imported and each side run once on a few images before the clock starts.
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


def baseline(images: np.ndarray) -> np.ndarray:
    from matplotlib.colors import rgb_to_hsv  # imported (and warmed up) before the timing: see main
    from skimage.feature import hog

    rows = []
    for image in images.transpose(0, 2, 3, 1):
        shape = hog(
            image, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2), block_norm="L2-Hys", channel_axis=-1
        )
        hue = rgb_to_hsv(image / 255.0)[..., 0]
        rows.append(np.concatenate([shape, np.histogram(hue, bins=10, range=(0, 1))[0] / hue.size]))
    return np.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO / ".cache" / "cifar10"), help="folder holding cifar-10-batches-py/")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--baseline-images",
        type=int,
        help="time the baseline on this many images and extrapolate (default: all, measured)",
    )
    args = parser.parse_args()

    raw = CIFAR10(root=args.root, download=False).read()
    images = torch.cat([raw.train.images, raw.test.images])
    features = build(compose_train(["features=hog+color", "features.cache_dir=null"]), "features")
    shape = tuple(images.shape[1:])
    features.extractors = {
        name: e.for_shape(shape) if hasattr(e, "for_shape") else e for name, e in features.extractors.items()
    }  # as make_splits does
    cpu = torch.device("cpu")
    # warm-up: both sides' libraries imported, paged in
    features.extract(images[:64], cpu), baseline(images[:8].numpy())
    print(
        f"{len(images):,} images {tuple(images.shape[1:])}; torch {torch.__version__}; load average at start "
        f"{os.getloadavg()}"
    )
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            ours = features.extract(images, cpu)
            times.append(time.perf_counter() - started)
        print(
            f"visionlab, {threads} thread(s): {min(times):.2f} s (runs: {', '.join(f'{t:.2f}' for t in times)}), "
            f"features {tuple(ours.shape)}"
        )

    n = min(args.baseline_images or len(images), len(images))
    started = time.perf_counter()
    theirs = baseline(images[:n].numpy())
    seconds = time.perf_counter() - started
    whole = f"{seconds * len(images) / n:.0f} s for {len(images):,} (extrapolated)" if n < len(images) else "measured"
    print(f"scikit-image + matplotlib per image: {seconds:.2f} s for {n:,} images, {whole}")
    difference = np.abs(ours[:n].double().numpy() - theirs)
    hog_size = features.extractors["hog"].size(tuple(images.shape[1:]))
    print(
        f"on those {n:,} images: HOG differs by at most {difference[:, :hog_size].max():.1e}; "
        f"{difference[:, hog_size:].sum(1).mean() / 2:.2%} of pixels are in another hue bin (on a bin edge: "
        "exact arithmetic here, float64 rounding there)"
    )
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
