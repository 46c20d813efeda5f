"""Which pictures a run puts in TensorBoard, and when: at the start, after an epoch's val pass, after test.

Everything runs at epoch boundaries under inference_mode and reuses what the run computes anyway:
the confusion matrix comes out of `evaluate()`, and the mistakes are picked by a `MistakeFinder`
that `evaluate()` shows every batch. No picture costs an extra pass over the data.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from visionlab.checks import Switch, Whole
from visionlab.compiled import eager
from visionlab.data import DeviceSplit, Splits
from visionlab.errors import DiskFull
from visionlab.features import FeatureSplits
from visionlab.reporting import embeddings, saliency, visuals
from visionlab.reporting.feature_pictures import feature_pictures
from visionlab.reporting.reporter import Reporter

log = logging.getLogger("visionlab")

PREVIEW_PER_CLASS = 8  # training images per class in the data preview
MISTAKES = 16  # most confidently wrong images per picture
UNITS_SHOWN = 64  # first-layer units of an MLP shown as templates
QUERIES = 8  # kNN: test images shown with their neighbours
NEIGHBOURS = 8  # kNN: neighbours shown per query (the vote may use fewer: the model's k)

EVERY = Whole(0, unit="epochs")  # 0: never


@dataclass
class VisualSettings:
    """`logging`: one switch per picture; see conf/logging/default.yaml. Checked before any data loads."""

    data_preview: Annotated[bool, Switch()] = True
    confusion_every_n_epochs: Annotated[int, EVERY] = 1
    first_layer_every_n_epochs: Annotated[int, EVERY] = 1
    mistakes_every_n_epochs: Annotated[int, EVERY] = 1
    neighbours: Annotated[bool, Switch()] = True
    histograms_every_n_epochs: Annotated[int, EVERY] = 0
    graph: Annotated[bool, Switch()] = True
    saliency: Annotated[bool, Switch()] = True
    embedding_points: Annotated[int, Whole(0, unit="points")] = 2000


def is_due(every: int, epoch: int, last: int) -> bool:
    """Every `every` epochs and at the last one, so the final model is always pictured; 0: never."""
    return every > 0 and (epoch % every == 0 or epoch == last)


def first_layer(model: nn.Module) -> tuple[nn.Module, bool] | None:
    """The first Linear or Conv2d layer (in registration order), and whether it is the only one.

    The only layer of a linear classifier turns pixels into class scores, so its weight rows are
    class templates; the first of several is a bank of templates or filters the rest builds on.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return (layers[0], len(layers) == 1) if layers else None


def tag_name(name: str) -> str:
    """A class name as one TensorBoard tag component ("0 - zero" -> "0_-_zero")."""
    return re.sub(r"[\s/]+", "_", name.strip())


def floor_percent(share: float) -> str:
    """0.9996 -> "99.9%": rounded down, so a confidence short of certainty never reads as 100%."""
    return f"{math.floor(share * 1000) / 10:g}%"


def per_class_accuracy(confusion: torch.Tensor) -> list[float | None]:
    """Each true class's share of correct predictions; None for a class with no images in the split."""
    totals = confusion.sum(1)
    return [None if total == 0 else (confusion[c, c] / total).item() for c, total in enumerate(totals.tolist())]


class MistakeFinder:
    """Keeps the `k` most confidently wrong predictions of one evaluate() pass, on the device.

    Called with each batch's (scores, labels) in order. Confidence is the softmax probability of the
    predicted class, or the vote share itself for a model whose scores are already votes (kNN).
    Per batch it costs a softmax and a top-k over k + batch numbers, and never waits on the device.
    """

    def __init__(self, k: int, votes: bool, device: torch.device):
        self.k = k
        self.votes = votes
        self.seen = 0
        self.confidence = torch.empty(0, device=device)
        self.index = torch.empty(0, dtype=torch.long, device=device)
        self.predicted = torch.empty(0, dtype=torch.long, device=device)

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        probabilities = scores.float() if self.votes else scores.float().softmax(1)
        confidence, predicted = probabilities.max(1)
        confidence = torch.where(predicted == labels, -1.0, confidence)  # right answers rank below every mistake
        index = torch.arange(self.seen, self.seen + len(labels), device=labels.device)
        self.seen += len(labels)
        confidence = torch.cat([self.confidence, confidence])
        top = confidence.topk(min(self.k, len(confidence))).indices
        self.confidence = confidence[top]
        self.index = torch.cat([self.index, index])[top]
        self.predicted = torch.cat([self.predicted, predicted])[top]

    def mistakes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(split indices, predicted classes, confidences) on the CPU, most confident first."""
        wrong = self.confidence >= 0
        return self.index[wrong].cpu(), self.predicted[wrong].cpu(), self.confidence[wrong].cpu()


def _after(epoch: int | None) -> str:
    """A picture title's ", epoch 3" (val and weights, after an epoch) or nothing (test, once at the end)."""
    return "" if epoch is None else f", epoch {epoch}"


def _timed(method):
    """Adds the method's wall time to `self.seconds`: the run log reports what the pictures cost.
    The method runs a compiled model eagerly: the pictures look inside it through hooks."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            with eager():
                return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    return wrapper


class VisualLog:
    """The run's pictures, histograms and graph; the Reporter writes them to TensorBoard.

    The loop calls `watch(epoch)` for the watcher to hand to evaluate() on val, then
    `end_epoch(...)` with evaluate()'s result; the run calls `start()`, then `watch()` and
    `finish(...)` around the one test pass.
    """

    def __init__(self, settings: VisualSettings, reporter: Reporter, model: nn.Module, splits: Splits, epochs: int):
        self.settings = settings
        self.reporter = reporter
        self.model = model
        self.splits = splits
        self.epochs = epochs
        self.classes = list(splits.classes)
        self.knn = callable(getattr(model, "neighbours", None))  # scores are vote shares; it can show its neighbours
        # the model sees vectors: no pictures of its input as images
        self.on_features = isinstance(splits, FeatureSplits)
        if self.on_features:
            log.info(
                "pictures: the model sees feature vectors, so the data preview, mistakes, first-layer and neighbour "
                "pictures are off"
            )
        self.finder: MistakeFinder | None = None
        self.embedding: embeddings.Penultimate | None = None
        self.seconds = 0.0

    @_timed
    @torch.inference_mode()
    def start(self) -> None:
        if self.settings.data_preview and self.on_features:
            self._feature_preview()
        elif self.settings.data_preview:
            self._data_preview()
        if self.settings.graph:
            self._graph()

    def watch(self, epoch: int | None = None) -> Callable[[torch.Tensor, torch.Tensor], None] | None:
        """What the coming evaluate() shows its batches to (val after `epoch`; test when None).

        A MistakeFinder if mistakes are due (on test, also for the saliency picture of them), and
        on test the penultimate-layer recorder for the embedding, which passes each batch on.
        """
        settings = self.settings
        every = settings.mistakes_every_n_epochs
        due = (every > 0 or settings.saliency) if epoch is None else is_due(every, epoch, self.epochs)
        self.finder = (
            MistakeFinder(MISTAKES, self.knn, self.splits.train.labels.device) if due and not self.on_features else None
        )
        self.embedding = None
        if (
            epoch is None
            and settings.embedding_points
            and not self.on_features
            and embeddings.penultimate_layer(self.model) is not None
        ):
            self.embedding = embeddings.Penultimate(
                self.model, len(self.splits.test), settings.embedding_points, self.finder
            )
            return self.embedding
        return self.finder

    @_timed
    @torch.inference_mode()
    def end_epoch(self, epoch: int, step: int, val: dict) -> None:
        settings = self.settings
        if is_due(settings.confusion_every_n_epochs, epoch, self.epochs):
            self._confusion("val", val["confusion"], step, epoch)
        if self.finder is not None:
            self._mistakes("val", self.splits.val, step, epoch)
        if is_due(settings.first_layer_every_n_epochs, epoch, self.epochs) and not self.on_features:
            self._first_layer(step, epoch)
        if is_due(settings.histograms_every_n_epochs, epoch, self.epochs):
            self._histograms(step)

    @_timed
    @torch.inference_mode()
    def finish(self, step: int, test: dict) -> None:
        if self.settings.confusion_every_n_epochs:
            self._confusion("test", test["confusion"], step)
        # before _mistakes, which drops the finder
        if self.finder is not None and self.settings.saliency and not self.knn:
            image = saliency.saliency_picture(self.model, self.splits.test, self.finder.mistakes()[0], self.classes)
            if image is not None:
                self.reporter.image("test/saliency", image, step)
        if self.finder is not None and self.settings.mistakes_every_n_epochs:
            self._mistakes("test", self.splits.test, step)
        if self.embedding is not None:
            self.reporter.embedding(self.embedding, self.splits.test, self.classes, step)
        if self.settings.neighbours and self.knn and not self.on_features:
            self._neighbours(step)
        log.info("pictures, histograms and graph took %.2f s", self.seconds)

    # ---- one method per picture ----------------------------------------------------------------

    def _data_preview(self) -> None:
        """The first training images of each class, one row per class, as stored: before normalization."""
        train = self.splits.train
        rows = visuals.first_per_class(train.labels.cpu(), len(self.classes), PREVIEW_PER_CLASS)
        tiles = train.images[rows.clamp_min(0).flatten().to(train.images.device)].cpu().float() / 255
        tiles[rows.flatten() < 0] = 1.0  # a class with fewer images gets blank tiles
        image = visuals.picture(
            tiles,
            PREVIEW_PER_CLASS,
            title="the first training images of each class, raw pixels (before normalization)",
            row_labels=self.classes,
        )
        self.reporter.image("data/train_preview", image, 0)

    def _feature_preview(self) -> None:
        """What the features see in the first training images: HOG's cells as oriented lines."""
        for tag, image in feature_pictures(self.splits.features, self.splits.examples).items():
            self.reporter.image(tag, image, 0)

    def _graph(self) -> None:
        example, _ = self.splits.val.batch(
            torch.arange(min(2, len(self.splits.val)), device=self.splits.val.labels.device)
        )
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
                self.reporter.graph(self.model, example)
        except DiskFull:
            raise
        except Exception as exc:  # any model may fail to trace; the run goes on without its graph
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.info(
                "model graph: %s did not trace (%s: %s), so TensorBoard's Graphs tab stays empty",
                type(self.model).__name__,
                type(exc).__name__,
                reason,
            )

    def _confusion(self, split: str, confusion: torch.Tensor, step: int, epoch: int | None = None) -> None:
        accuracy = confusion.trace().item() / max(confusion.sum().item(), 1)
        title = f"{split} confusion matrix{_after(epoch)}: acc {accuracy:.4f}"
        self.reporter.image(
            f"{split}/confusion_matrix", visuals.confusion_picture(confusion, self.classes, title), step
        )
        self.reporter.scalars(
            {
                f"{split}/per_class_acc/{tag_name(name)}": acc
                for name, acc in zip(self.classes, per_class_accuracy(confusion))
            },
            step,
        )

    def _mistakes(self, split_name: str, split: DeviceSplit, step: int, epoch: int | None = None) -> None:
        index, predicted, confidence = self.finder.mistakes()
        self.finder = None
        if not len(index):
            return  # not a single mistake: nothing to show
        true = split.labels[index.to(split.labels.device)].cpu()
        tiles = split.images[index.to(split.images.device)].cpu().float() / 255
        what = "vote" if self.knn else "confidence"
        captions = [
            f"{self.classes[p]} ({floor_percent(c)})\ntrue {self.classes[t]}"
            for p, c, t in zip(predicted.tolist(), confidence.tolist(), true.tolist())
        ]
        title = (
            f"{split_name}: the {len(index)} most confidently wrong{_after(epoch)}: predicted class (its {what}), "
            "true class"
        )
        image = visuals.picture(tiles, 8, title=title, captions=captions, caption_colors=["firebrick"] * len(index))
        self.reporter.image(f"{split_name}/mistakes", image, step)

    def _first_layer(self, step: int, epoch: int) -> None:
        found = first_layer(self.model)
        if found is None:
            return
        layer, only = found
        weight = layer.weight
        if isinstance(layer, nn.Conv2d):
            tiles = visuals.as_tiles(weight, weight.shape[1:])
            # a row per filter when split by channel
            per_row = weight.shape[1] if len(tiles) > len(weight) else math.ceil(math.sqrt(len(tiles)))
            title = f"first conv layer: {len(weight)} filters of {weight.shape[2]}x{weight.shape[3]}{_after(epoch)}"
            self.reporter.image("first_layer/filters", visuals.picture(tiles, per_row, title=title), step)
        elif layer.in_features == math.prod(self.splits.in_shape):
            if only:  # a linear classifier: one template per class
                tiles = visuals.as_tiles(weight, self.splits.in_shape)
                image = visuals.picture(
                    tiles, len(tiles), title=f"class templates (rows of W){_after(epoch)}", col_labels=self.classes
                )
                self.reporter.image("first_layer/class_templates", image, step)
            else:
                tiles = visuals.as_tiles(weight[:UNITS_SHOWN], self.splits.in_shape)
                title = f"first layer: {len(tiles)} of {len(weight)} units as templates{_after(epoch)}"
                self.reporter.image("first_layer/templates", visuals.picture(tiles, 8, title=title), step)

    def _histograms(self, step: int) -> None:
        """Every parameter and its gradient from the epoch's last batch, plus that gradient's total L2 norm."""
        grads = []
        for name, param in self.model.named_parameters():
            self.reporter.histogram(f"params/{name}", param, step)
            if param.grad is not None:
                self.reporter.histogram(f"grads/{name}", param.grad, step)
                grads.append(param.grad.norm())
        if grads:
            self.reporter.scalars({"grad_norm": torch.stack(grads).norm().item()}, step)

    def _neighbours(self, step: int) -> None:
        """kNN: the first test images, each followed by its nearest training images, green when they share its class."""
        test, train = self.splits.test, self.splits.train
        n, k = min(QUERIES, len(test)), min(NEIGHBOURS, len(train))
        queries, true = test.batch(torch.arange(n, device=test.labels.device))
        _, nearest = self.model.neighbours(queries, k)
        predicted = self.model(queries).argmax(1).tolist()
        tiles = torch.cat([test.images[:n].unsqueeze(1), train.images[nearest]], 1).flatten(0, 1).cpu().float() / 255
        labels = torch.cat([true.view(-1, 1), train.labels[nearest]], 1).tolist()
        captions, colors = [], []
        for row in labels:
            for position, label in enumerate(row):
                captions.append(f"{'query' if position == 0 else f'#{position}'}\n{self.classes[label]}")
                colors.append("black" if position == 0 else ("forestgreen" if label == row[0] else "firebrick"))
        voters = f"; the first {self.model.k} vote" if isinstance(getattr(self.model, "k", None), int) else ""
        title = f"test queries (left) and their {k} nearest training images{voters}"
        image = visuals.picture(
            tiles,
            k + 1,
            title=title,
            captions=captions,
            caption_colors=colors,
            row_labels=[f"says {self.classes[p]}" for p in predicted],
        )
        self.reporter.image("test/neighbours", image, step)
