"""`vl-predict CHECKPOINT IMAGE_OR_FOLDER...`: what a saved model says about your own pictures.

The model and its data preparation are rebuilt from the checkpoint as `vl-eval` does (size,
channels, the training split's normalization, features), and each file is decoded, turned upright,
converted and resized exactly as `dataset=folder` prepares its training images. The output is a table of the
top-k classes, `predictions.csv` and `predictions.png`: each image with its gradient saliency and
Grad-CAM maps for the top class beside it; a kNN shows its votes and the nearest training images instead.
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from rich.table import Table

from visionlab.config_errors import one_line
from visionlab.console import ConsoleHandler, console, error_console
from visionlab.data import DeviceSplit, Splits
from visionlab.data.images import BadImage, decode, decode_image, is_image, to_tensor
from visionlab.errors import DiskFull, UserError
from visionlab.evaluation import CHECKPOINT_CHOICES, load_model
from visionlab.experiment import Components
from visionlab.features import FeatureSplits
from visionlab.reporting import saliency, visuals
from visionlab.reporting.visuals import floor_percent

log = logging.getLogger("visionlab")

PICTURED = 32  # images in predictions.png (the table and the CSV have them all)
NEIGHBOURS = 8  # kNN: training images shown per query


@dataclass
class Prepared:
    """The images as the model sees them, before normalization, and what was done to each to get there."""

    names: list[str]  # a file's path, or "image <i>" for one given in memory (visionlab.predict)
    images: torch.Tensor  # uint8 [N, C, H, W]
    notes: list[str]


@dataclass
class Predictions:
    """What the model says about each image: its top classes, most probable first (a kNN: its vote shares)."""

    checkpoint: Path  # the file whose weights spoke
    classes: list[str]
    prepared: Prepared
    top_class: torch.Tensor  # [N, k] class indices
    top_p: torch.Tensor  # [N, k]
    nearest: torch.Tensor | None = None  # a kNN's nearest training images, [N, n], nearest first
    votes: list[str] | None = None  # a kNN's k neighbours' classes: "cat 2, dog 1"
    voters: int | None = None  # a kNN's k: how many of the nearest vote

    def rows(self) -> list[dict]:
        """One plain dict per image: `image`, `predicted`, `probability`, `top` ([class, probability] pairs) and
        `note` (what was done to the image: turned, converted, resized)."""
        rows = []
        for i, name in enumerate(self.prepared.names):
            top = [[self.classes[c], p] for c, p in zip(self.top_class[i].tolist(), self.top_p[i].tolist())]
            row = {"image": name, "predicted": top[0][0], "probability": top[0][1], "top": top}
            rows.append({**row, **({"votes": self.votes[i]} if self.votes else {}), "note": self.prepared.notes[i]})
        return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="vl-predict",
        description="Classify image files with a saved model, as its run prepared its images: "
        "the top classes of each in a table, and predictions.csv (every file's top classes and scores) and "
        "predictions.png (the images with their saliency maps; a kNN: its nearest training images) in --out.",
    )
    parser.add_argument(
        "checkpoint",
        type=Path,
        help="which weights: a run's best.pt (its best epoch by the objective) "
        "or last.pt (its last epoch); a run directory means the checkpoint that took its test (--checkpoint picks "
        "last or best)",
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE_OR_FOLDER|key=value",
        help="image files, or folders searched for them; key=value changes the stored config (dataset.root=/data)",
    )
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        metavar="DIR",
        help="your own configs (as for vl-train): the classes their YAML names may be built from the checkpoint",
    )
    parser.add_argument(
        "--checkpoint",
        choices=CHECKPOINT_CHOICES,
        dest="which",
        help="with a run directory: its last or best checkpoint instead of the one that took the test",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for predictions.csv and predictions.png (default: the checkpoint's)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[ConsoleHandler()])
    try:
        if args.top_k < 1:
            raise UserError(f"--top-k={args.top_k} is invalid: use a whole number of at least 1, such as 5")
        overrides = [a for a in args.inputs if "=" in a and not Path(a).exists()]
        files = image_files([a for a in args.inputs if a not in overrides])
        predict(args.checkpoint, files, overrides, args.top_k, args.out, args.config_dir, args.which)
    except (UserError, OSError) as exc:
        error_console.print(
            f"error: {one_line(exc) if isinstance(exc, UserError) else describe_os_error(exc)}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(2)
    except DiskFull as exc:  # a features cache
        error_console.print(
            f"error: {exc}: free some space and run again", markup=False, highlight=False, soft_wrap=True
        )
        sys.exit(exc.exit_code)


def describe_os_error(exc: OSError) -> str:
    return f"cannot write {exc.filename} ({exc.strerror}): choose another folder with --out"


def image_files(inputs: list[str]) -> list[Path]:
    """Every file named, and every image file below every folder named, in that order."""
    if not inputs:
        raise UserError("no image given: vl-predict CHECKPOINT IMAGE_OR_FOLDER... (files, or folders of them)")
    files, ignored = [], 0
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            below = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            found = [p for p in below if is_image(p.name)]
            if not found:
                raise UserError(
                    f"{path} holds no image files (PNG, JPEG, BMP, GIF, WebP or HEIC): give image files or folders "
                    "of them"
                )
            files += found
            ignored += len(below) - len(found)
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path} does not exist: give image files or folders of them")
    if ignored:
        log.info("ignored %s files that are not images", f"{ignored:,}")
    return files


def prepare(images: list[Path | Image.Image | torch.Tensor], shape: tuple[int, int, int]) -> Prepared:
    """Decode each file (or take each image given in memory) upright, to the model's channels and size;
    say what each needed (turning, grey <-> RGB, resizing)."""
    channels, size = shape[0], shape[1:]
    tensors, names, notes = [], [], []
    for index, item in enumerate(images):
        name = str(item) if isinstance(item, Path) else f"image {index}"
        try:
            picture = (
                decode(item, channels, size)
                if isinstance(item, Path)
                else decode_image(pillow(item, name), channels, size)
            )
        except BadImage as exc:
            raise UserError(
                f"{name} could not be read as an image ({exc}): give PNG, JPEG, BMP, GIF, WebP or HEIC files"
            ) from None
        done = []
        if picture.orientation != 1:
            done.append(f"turned upright by its EXIF orientation ({picture.orientation})")
        if picture.grey and channels == 3:
            done.append("grey file converted to RGB")
        elif not picture.grey and channels == 1:
            done.append("RGB file converted to grey")
        height, width = picture.size
        if (height, width) != tuple(size):
            done.append(f"resized from {width}x{height} to {size[1]}x{size[0]}")
        tensors.append(to_tensor(picture.pixels))
        names.append(name)
        notes.append("; ".join(done))
    return Prepared(names, torch.stack(tensors), notes)


def pillow(image: Image.Image | torch.Tensor, name: str) -> Image.Image:
    """A Pillow image as given, or a tensor's `[C, H, W]` pixels (C 1 or 3; uint8, or floats in [0, 1]) as one."""
    if isinstance(image, Image.Image):
        return image
    if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] not in (1, 3):
        what = f"a tensor of shape {tuple(image.shape)}" if isinstance(image, torch.Tensor) else type(image).__name__
        raise UserError(
            f"{name} is {what}: give image files or folders, PIL images, or [C, H, W] tensors with 1 or 3 channels"
        )
    pixels = image.detach().cpu()
    if pixels.is_floating_point():
        pixels = (pixels.clamp(0, 1) * 255).round()
    array = pixels.to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)


def model_input(splits: Splits, images: torch.Tensor) -> torch.Tensor:
    """Normalized as the training split was; through the run's feature extractors first, if it had any."""
    device = splits.train.labels.device
    rows = splits.features.extract(images, device) if isinstance(splits, FeatureSplits) else images.to(device)
    part = DeviceSplit(
        rows, torch.zeros(len(rows), dtype=torch.long, device=device), splits.train.scale, splits.train.shift
    )
    return part.batch(torch.arange(len(rows), device=device))[0]


def classify(
    path: Path, components: Components, model: torch.nn.Module, splits: Splits, prepared: Prepared, top_k: int
) -> Predictions:
    """The model's top `top_k` classes for each prepared image (a kNN: its vote shares, and its nearest training
    images)."""
    learner = components.learner
    search, voters = learner.neighbours(model), learner.voters(model)
    with torch.inference_mode():
        x = model_input(splits, prepared.images)
        scores = torch.cat([model(part) for part in x.split(components.trainer.eval_batch_size)]).float().cpu()
        probabilities = scores if learner.votes else scores.softmax(1)
        nearest = search(x, max(voters, min(NEIGHBOURS, len(splits.train))))[1].cpu() if search else None
    top_p, top_class = probabilities.topk(min(top_k, splits.num_classes), dim=1)
    train_labels = splits.train.labels.cpu()
    votes = [vote_text(train_labels[row[:voters]], splits.classes) for row in nearest] if search else None
    return Predictions(path, list(splits.classes), prepared, top_class, top_p, nearest, votes, voters)


def predict(
    checkpoint: Path,
    images: list[Path | Image.Image | torch.Tensor],
    overrides: list[str] = (),
    top_k: int = 5,
    out: Path | None = None,
    config_dirs: list[str] = (),
    which: str | None = None,
    show: bool = True,
) -> Predictions:
    """The checkpoint's model on `images`, prepared as its run prepared its own; with `out` (or `show`, the CLI:
    the checkpoint's folder), predictions.csv and predictions.png written there; with `show`, the table printed."""
    path, components, model, splits = load_model(checkpoint, overrides, config_dirs, which)
    shape = tuple(splits.examples.shape[1:]) if isinstance(splits, FeatureSplits) else tuple(splits.in_shape)
    prepared = prepare(images, shape)
    for name, note in zip(prepared.names, prepared.notes):
        if note:
            log.info("%s: %s (the model takes %s images)", name, note, "x".join(map(str, shape)))
    found = classify(path, components, model, splits, prepared, top_k)
    if show:
        console.print(predictions_table(found))
    if out is not None or show:
        write_predictions(found, model, splits, out or path.parent)
    return found


def predictions_table(found: Predictions) -> Table:
    knn = found.votes is not None
    k = found.top_class.shape[1]
    title = f"{found.checkpoint}: top {k} of {len(found.classes)} classes"
    table = Table(title=title + (f" (kNN, k={found.voters}: vote shares)" if knn else ""))
    table.add_column("image")
    for j in range(k):
        table.add_column(f"#{j + 1}", justify="right")
    if knn:
        table.add_column("votes")
    table.add_column("note")
    for i, name in enumerate(found.prepared.names):
        ranked = zip(found.top_class[i].tolist(), found.top_p[i].tolist())
        cells = [f"{found.classes[c]} {floor_percent(p)}" for c, p in ranked]
        table.add_row(name, *cells, *([found.votes[i]] if knn else []), found.prepared.notes[i])
    return table


def write_predictions(found: Predictions, model: torch.nn.Module, splits: Splits, folder: Path) -> None:
    """predictions.csv (every image's top classes) and predictions.png (the first images, explained) in `folder`."""
    knn = found.votes is not None
    classes, prepared, top_class, top_p, nearest = (
        found.classes,
        found.prepared,
        found.top_class,
        found.top_p,
        found.nearest,
    )
    k = top_class.shape[1]
    train_labels = splits.train.labels.cpu()
    folder.mkdir(parents=True, exist_ok=True)
    csv_path = folder / "predictions.csv"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        header = ["file", "predicted", "probability"] + [
            f"{what}_{j + 1}" for j in range(k) for what in ("class", "probability")
        ]
        writer.writerow(header + (["votes", "nearest_training_images"] if knn else []) + ["note"])
        for i, name in enumerate(prepared.names):
            ranked = [
                value for c, p in zip(top_class[i].tolist(), top_p[i].tolist()) for value in (classes[c], f"{p:.6f}")
            ]
            neighbours = (
                [found.votes[i], " ".join(f"{n}:{classes[train_labels[n]]}" for n in nearest[i].tolist())]
                if knn
                else []
            )
            writer.writerow(
                [name, classes[top_class[i, 0]], f"{top_p[i, 0]:.6f}", *ranked, *neighbours, prepared.notes[i]]
            )
    picture_path = folder / "predictions.png"
    # on features, the training images are vectors: no neighbours to show
    if knn and not isinstance(splits, FeatureSplits):
        image = neighbours_picture(prepared, splits, nearest, top_class[:, 0], classes)
    elif isinstance(splits, FeatureSplits) or knn:
        # the model sees vectors, or has no gradients: no maps over the image
        image = predictions_picture(prepared, top_class, top_p, classes)
    else:
        x = model_input(splits, prepared.images)
        image = explained_predictions_picture(model, x, prepared, top_class, top_p, classes)
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(picture_path)
    console.print(f"written to {csv_path} and {picture_path}", markup=False, highlight=False)


def vote_text(labels: torch.Tensor, classes: list[str]) -> str:
    """The k nearest neighbours' classes, most votes first: "cat 2, dog 1"."""
    return ", ".join(f"{classes[c]} {n}" for c, n in Counter(labels.tolist()).most_common())


def prediction_captions(n: int, top_class: torch.Tensor, top_p: torch.Tensor, classes: list[str]) -> list[str]:
    """Each of the first n images' top class and runner-up, with their probabilities."""
    captions = []
    for i in range(n):
        runner_up = (
            f"\n{classes[top_class[i, 1]]} {floor_percent(float(top_p[i, 1]))}" if top_class.shape[1] > 1 else ""
        )
        captions.append(f"{classes[top_class[i, 0]]} {floor_percent(float(top_p[i, 0]))}{runner_up}")
    return captions


def first_of(n: int, total: int) -> str:
    return f" (the first {n} of {total} images)" if n < total else ""


def predictions_picture(
    prepared: Prepared, top_class: torch.Tensor, top_p: torch.Tensor, classes: list[str]
) -> torch.Tensor:
    n = min(PICTURED, len(prepared.names))
    title = f"predictions: the top class and the runner-up{first_of(n, len(prepared.names))}"
    return visuals.picture(
        prepared.images[:n].float() / 255, 8, title=title, captions=prediction_captions(n, top_class, top_p, classes)
    )


def explained_predictions_picture(
    model: torch.nn.Module,
    x: torch.Tensor,
    prepared: Prepared,
    top_class: torch.Tensor,
    top_p: torch.Tensor,
    classes: list[str],
) -> torch.Tensor:
    """Each image with its gradient saliency and Grad-CAM for the top class beside it (reporting/saliency.py)."""
    n = min(PICTURED, len(prepared.names))
    found = saliency.attributions(model, x[:n], top_class[:n, 0].to(x.device))
    title = f"predictions: top class and runner-up; {saliency.maps_title(found)}{first_of(n, len(prepared.names))}"
    return saliency.explained_picture(
        prepared.images[:n], found, prediction_captions(n, top_class, top_p, classes), ["black"] * n, title
    )


def neighbours_picture(
    prepared: Prepared, splits: Splits, nearest: torch.Tensor, predicted: torch.Tensor, classes: list[str]
) -> torch.Tensor:
    """Each image (left) and its nearest training images, green where they share the predicted class."""
    n = min(PICTURED, len(prepared.names))
    shown = nearest[:n, :NEIGHBOURS]
    neighbours = splits.train.images[shown.to(splits.train.images.device)].cpu()
    tiles = torch.cat([prepared.images[:n].unsqueeze(1), neighbours], 1).flatten(0, 1).float() / 255
    labels = splits.train.labels.cpu()[shown]
    captions, colours = [], []
    for i in range(n):
        captions.append(f"{Path(prepared.names[i]).name[:14]}\nsays {classes[predicted[i]]}")
        colours.append("black")
        for position, label in enumerate(labels[i].tolist()):
            captions.append(f"#{position + 1}\n{classes[label]}")
            colours.append("forestgreen" if label == predicted[i] else "firebrick")
    return visuals.picture(
        tiles,
        shown.shape[1] + 1,
        title="your images (left) and their nearest training images",
        captions=captions,
        caption_colors=colours,
    )


if __name__ == "__main__":
    main()
