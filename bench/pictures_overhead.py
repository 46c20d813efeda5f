"""What the pictures cost a default run: `vl-train` (the default job) with every picture on against every one off.

    .venv/bin/python bench/pictures_overhead.py             # 3 rounds of on, off, off, on
    .venv/bin/python bench/pictures_overhead.py --quick     # one launch each on a small job of one epoch (a smoke run)

Each launch is timed from start to exit, in rounds of on, off, off, on, so a burst of load from
elsewhere hits both sides; the rows give the medians and the run's own picture timer (the line
`pictures, histograms and graph took … s` in train.log). "Off" is `logging=none`, which turns off every
picture conf/logging/default.yaml lists (tests/reporting/test_picture_list.py checks that it does), so
pictures added there are counted as soon as they are.

The last rows measure the pictures of issue 19 in process, on the default job's own data and model:
the layer table, the saliency and Grad-CAM picture of the test mistakes, and the test images'
embedding for the projector (the test pass with the recorder as its watcher and the files written,
less the same pass without it), each as a run would call it once, after one training step and one
evaluation pass, so nothing is paid here that a run has already paid (imports, the first backward,
the first TensorBoard write); the median of 3 calls, against the default run's time with the
pictures off.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from common import REPO, VL_TRAIN, Row, main, parser

# the default job's epoch budget cut to one epoch: its 400 steps are 80 epochs of 600 images
QUICK = [
    "dataset.train_size=600",
    "dataset.test_size=200",
    "trainer.epoch_budget.epochs=1",
    "trainer.epoch_budget.min_steps=0",
]
EMBEDDING_POINTS = 2000  # the cap proposed for logging.embedding_points
TIMER = re.compile(r"pictures, histograms and graph took ([\d.]+) s")


def launch(overrides: list[str], run_dir: Path) -> tuple[float, float | None]:
    """(seconds from launch to exit, the run's own picture timer or None) of one vl-train."""
    started = time.perf_counter()
    subprocess.run(
        [str(VL_TRAIN), *overrides, f"hydra.run.dir={run_dir}"],
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - started
    found = TIMER.search((run_dir / "train.log").read_text())
    return seconds, float(found.group(1)) if found else None


def inside_pictures(overrides: list[str], repeats: int) -> dict[str, float]:
    """Median seconds of each issue-19 picture on the default job's data and model, as a run would call it."""
    import torch
    from hydra import compose, initialize_config_dir
    from torch.utils.tensorboard import SummaryWriter

    from visionlab.experiment import build_components, prepare_data
    from visionlab.reporting import embeddings, saliency
    from visionlab.reporting.layer_summary import report_layers
    from visionlab.reporting.pictures.mistake_finder import MISTAKES, MistakeFinder
    from visionlab.training.device import resolve_device
    from visionlab.training.loop import all_of, evaluate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    device = resolve_device(cfg.trainer.device)
    components = build_components(cfg)
    splits = prepare_data(components, device)
    model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes).to(device)
    optimizer = components.learner.optimizer(model.parameters())  # what a run pays anyway (it imports torch._dynamo)
    images, labels = splits.train.batch(torch.arange(cfg.trainer.batch_size, device=device))
    torch.nn.functional.cross_entropy(model(images), labels).backward()
    optimizer.step()
    finder = MistakeFinder(MISTAKES, False, device)
    evaluate(model, splits.test, None, cfg.trainer.eval_batch_size, watch=finder)
    mistakes = finder.mistakes()[0]
    times: dict[str, list[float]] = {
        "layer table": [],
        "saliency picture": [],
        "embedding (recorder in the test pass, and writing)": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        writer = SummaryWriter(tmp)
        writer.add_scalar("warm-up", 0.0, 0)
        for repeat in range(repeats):
            started = time.perf_counter()
            report_layers(model, splits.in_shape, Path(tmp), "vl-train")
            times["layer table"].append(time.perf_counter() - started)
            started = time.perf_counter()
            with torch.inference_mode():
                writer.add_image(
                    "test/saliency", saliency.saliency_picture(model, splits.test, mistakes, splits.classes), repeat
                )
            times["saliency picture"].append(time.perf_counter() - started)
            started = time.perf_counter()
            evaluate(
                model, splits.test, None, cfg.trainer.eval_batch_size, watch=MistakeFinder(MISTAKES, False, device)
            )
            plain = time.perf_counter() - started
            started = time.perf_counter()
            recorder = embeddings.Penultimate(model, len(splits.test), EMBEDDING_POINTS)
            watch = all_of([recorder, MistakeFinder(MISTAKES, False, device)])  # as the pictures watch the test pass
            evaluate(model, splits.test, None, cfg.trainer.eval_batch_size, watch=watch)
            recorder.write(writer, splits.test, splits.classes, repeat)
            times["embedding (recorder in the test pass, and writing)"].append(time.perf_counter() - started - plain)
        writer.close()
    return {name: statistics.median(values) for name, values in times.items()}


def rows(args) -> list[Row]:
    rounds = 1 if args.quick else args.rounds
    job = QUICK if args.quick else []
    on, off, timer = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            for side in ("on", "off") if args.quick else ("on", "off", "off", "on"):
                run_dir = Path(tmp) / f"{round_}-{side}-{len(on) + len(off)}"
                seconds, pictures = launch(job + (["logging=none"] if side == "off" else []), run_dir)
                (on if side == "on" else off).append(seconds)
                if side == "on" and pictures is not None:
                    timer.append(pictures)
    every = f" (median of {len(on)})" if len(on) > 1 else ""
    on_s, off_s = statistics.median(on), statistics.median(off)
    repeats = 1 if args.quick else 3
    inside = inside_pictures(job, repeats)
    inside_total = sum(inside.values())
    breakdown = ", ".join(f"{name} {seconds:.3f}" for name, seconds in inside.items())
    return [
        Row(
            f"pictures: the default job, launch to exit, every picture on vs off, s{every}",
            f"{on_s:.2f} (on: {', '.join(f'{s:.1f}' for s in on)})",
            f"{off_s:.2f} (off: {', '.join(f'{s:.1f}' for s in off)})",
            f"{100 * (on_s - off_s) / off_s:+.1f}%",
        ),
        Row(
            f"pictures: the default job, the run's own picture timer, s{every}",
            f"{statistics.median(timer):.2f}" if timer else "n/a",
            f"{off_s:.2f} (the run with pictures off)",
            f"{100 * statistics.median(timer) / off_s:.1f}%" if timer else "n/a",
        ),
        Row(
            "pictures: issue 19's saliency, embedding and layer table, in process on the default job, "
            f"s{f' (median of {repeats} calls)' if repeats > 1 else ''}",
            f"{inside_total:.3f} ({breakdown})",
            f"{off_s:.2f} (the run with pictures off)",
            f"{100 * inside_total / off_s:.1f}%",
        ),
    ]


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument("--rounds", type=int, default=3, help="rounds of on, off, off, on (default 3)")
    main("pictures_overhead", rows, arguments.parse_args())
