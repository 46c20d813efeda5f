"""Folders of phone-size photos with each model's defaults: peak memory, time, run-folder size, test accuracy
(issue 36).

    .venv/bin/python bench/photos.py              # 40 photos of 4032x3024; 300 and 500 of 640x480 (minutes;
                                                  # about 2 GB of disk)
    .venv/bin/python bench/photos.py --quick      # 12 of 504x378, 30 and 50 of 160x120, one epoch, no
                                                  # pictures, no warm-up run: a smoke run

The photos are drawn here (three filled shapes on a plain background, one kind of shape per class;
every third one a portrait shot stored sideways with EXIF orientation 6) and written as JPEGs of
quality 85. Each run is `vl-train dataset=folder dataset.root=TREE model=M trainer.device=cpu`, in
a fresh process with the folder's cache made by an earlier run; peak memory is the process's RSS
from `wait4`, time is launch to exit, the run folder's size is everything it wrote. The baseline is
the same run at the photos' own size (`dataset.max_side=null`, what `dataset.size=null` did before
issue 36): where the memory check (budget.py) refuses it, the row says so and what it would need.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common import REPO, VL_TRAIN, Row, main, parser

MIB = 2**20
FULL = {"phone": (40, (4032, 3024)), "medium": (300, (640, 480)), "medium_500": (500, (640, 480))}
# --quick's phone photos: still several times max_side (decoded at a reduced scale and shrunk, as a phone's are), and
# small enough that the baseline's CNN at their full size stays small (24 M weights).
QUICK = {"phone": (12, (504, 378)), "medium": (30, (160, 120)), "medium_500": (50, (160, 120))}
# A smoke run checks that every row runs: one epoch and no pictures (a recipe's epochs and the saliency of
# full-size photos are what the full run measures), and each folder's first run makes its cache.
QUICK_RUN = ["trainer.epochs=1", "logging=none"]
KINDS = ("ellipse", "rectangle", "polygon")


def draw(root: Path, count: int, size: tuple[int, int]) -> Path:
    """`count` photos of `size` (width, height) in three classes."""
    rng = np.random.default_rng(0)
    width, height = size
    for i in range(count):
        kind = KINDS[i % 3]
        folder = root / kind
        folder.mkdir(parents=True, exist_ok=True)
        image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 110, 3)))
        pen = ImageDraw.Draw(image)
        for _ in range(3):
            side = int(rng.integers(min(size) // 6, min(size) // 3))
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            box = [x, y, x + side, y + side]
            fill = tuple(int(v) for v in rng.integers(130, 256, 3))
            if kind == "polygon":
                pen.polygon([(x, y + side), (x + side // 2, y), (x + side, y + side)], fill=fill)
            else:
                getattr(pen, kind)(box, fill=fill)
        exif = Image.Exif()
        exif[0x0112] = 6 if i % 9 < 3 else 1
        stored = image.transpose(Image.Transpose.ROTATE_90) if i % 9 < 3 else image  # shown upright by orientation 6
        stored.save(folder / f"IMG_{i:04d}.jpg", quality=85, exif=exif.tobytes())
    return root


def launch(overrides: list[str], run_dir: Path) -> dict:
    """One vl-train: exit code, launch-to-exit seconds, peak RSS, the run folder's bytes,
    its test/acc and its error line."""
    started = time.perf_counter()
    with open(run_dir.parent / f"{run_dir.name}.stderr", "w") as err:
        process = subprocess.Popen(
            [str(VL_TRAIN), *overrides, "trainer.device=cpu", f"hydra.run.dir={run_dir}"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    metrics = run_dir / "metrics.json"
    accuracy = re.search(r'"test/acc": ([0-9.]+)', metrics.read_text()) if metrics.exists() else None
    size = sum(f.stat().st_size for f in run_dir.rglob("*") if f.is_file()) if run_dir.exists() else 0
    return {
        "code": os.waitstatus_to_exitcode(status),
        "seconds": seconds,
        "rss": usage.ru_maxrss * 1024,
        "bytes": size,
        "acc": float(accuracy.group(1)) if accuracy else None,
        "error": (run_dir.parent / f"{run_dir.name}.stderr").read_text().strip(),
    }


def said(run: dict) -> str:
    if run["code"] == 2:
        needed = re.search(r"needs about ([0-9.]+ [MG]B)", run["error"])
        return (
            f"refused before decoding (exit 2{f': needs {needed.group(1)}' if needed else ''}; {run['seconds']:.1f} s)"
        )
    if run["code"]:
        return f"exit {run['code']} after {run['seconds']:.1f} s"
    acc = f"{run['acc']:.1%}" if run["acc"] is not None else "n/a"
    return (
        f"{run['rss'] / MIB:,.0f} MiB peak, {run['seconds']:.1f} s, run folder {run['bytes'] / MIB:,.1f} MiB, "
        f"test/acc {acc}"
    )


def rows(args) -> list[Row]:
    folders = QUICK if args.quick else FULL
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, (count, size) in folders.items():
            tree = draw(scratch / name, count, size)
            models = ("linear", "mlp", "cnn", "knn") if name == "medium" else ("cnn",) if name == "phone" else ("mlp",)
            data = ["dataset=folder", f"dataset.root={tree}", *(QUICK_RUN if args.quick else [])]
            if not args.quick:  # the image cache: one per folder and size
                launch([*data, f"model={models[0]}"], scratch / f"warm-{name}")
            for model in models:
                job = [*data, f"model={model}"]
                ours = launch(job, scratch / f"{name}-{model}")
                baseline = launch([*job, "dataset.max_side=null"], scratch / f"{name}-{model}-full")
                ratio = (
                    f"{baseline['rss'] / ours['rss']:.1f}x the memory"
                    if not ours["code"] and not baseline["code"]
                    else ""
                )
                out.append(
                    Row(
                        f"photos: {count} of {size[0]}x{size[1]}, model={model} defaults"
                        f"{' --quick (' + ' '.join(QUICK_RUN) + ')' if args.quick else ''}",
                        said(ours),
                        f"{said(baseline)} (dataset.max_side=null)",
                        ratio,
                    )
                )
    return out


if __name__ == "__main__":
    main("photos", rows, parser(__doc__).parse_args())
