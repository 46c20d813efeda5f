"""`features`: what the model sees. Raw pixels, or vectors from classical feature extractors.

Extractors (HOG, colour histograms) are named in the config (`features.hog`, `features.color`);
with several, each image's vectors are concatenated in that order. Every official split is
turned into vectors once, on the training device, a chunk of images at a time, and cached on
disk; train and val are then carved out of the train split's vectors, so the cache does not
depend on the seed or val_fraction.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Protocol

import torch
from hydra.utils import get_class
from omegaconf import DictConfig

from visionlab.cache import TensorCache, images_digest
from visionlab.checks import WritesOutside
from visionlab.data import RawData, Splits, make_splits
from visionlab.data.augment import Augment
from visionlab.errors import UserError
from visionlab.features.splits import feature_splits
from visionlab.models.knn import KNN
from visionlab.models.linear import Linear
from visionlab.models.mlp import MLP

log = logging.getLogger("visionlab")

# Images per extraction step: 187 MiB of scratch for 32x32 colour images (BENCHMARKS.md, "Image features"). Each
# step is a few dozen parallel regions, each waiting for every thread, so fewer, bigger steps wait less on busy cores.
CHUNK = 2048
VECTOR_MODELS = (Linear, MLP, KNN)  # models that flatten their input, so a vector serves as well as an image


class Extractor(Protocol):
    """A dataclass of parameters that turns uint8 images `[N, C, H, W]` into float32 vectors `[N, size]`."""

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...

    def size(self, shape: tuple[int, int, int]) -> int: ...

    def describe(self, shape: tuple[int, int, int]) -> str: ...


class Features:
    """The `features` group's object. No extractors (`features=none`): raw pixels, as without this group."""

    def __init__(self, cache_dir: Annotated[str | None, WritesOutside()] = None, **extractors: Extractor):
        for name, extractor in extractors.items():
            if not (callable(extractor) and hasattr(extractor, "size")):
                raise UserError(
                    f"features.{name}={extractor!r} is not a feature extractor: see conf/features/ for hog and color"
                )
        self.extractors = extractors
        self.cache = TensorCache(Path(cache_dir).expanduser().absolute()) if cache_dir else None

    def check_model(self, model: DictConfig) -> None:
        """Before any data loads: features are vectors, so the model must be one that takes vectors."""
        if not self.extractors:
            return
        try:
            model_class = get_class(model._target_)
        except Exception:  # a bad target is build()'s to report
            return
        if not issubclass(model_class, VECTOR_MODELS):
            raise UserError(
                f"model._target_={model._target_} takes images, but the features ({self.name}) are "
                "one vector per image: use model=linear, model=mlp or model=knn with them, or features=none"
            )

    def augment(self, augment: Augment) -> Augment:
        """The training batches' augmentation: the dataset's on pixels, none on features (computed once,
        from the plain images)."""
        if self.extractors and augment != Augment():
            log.info(
                "features: dataset.augment is not applied (%s): the features are computed once, from the images as "
                "they are",
                augment,
            )
            return Augment()
        return augment

    @property
    def name(self) -> str:
        return " + ".join(self.extractors) or "none"

    def make_splits(
        self, raw: RawData, train_index: torch.Tensor, val_index: torch.Tensor, device: torch.device, dataset: str
    ) -> Splits:
        """Train/val/test for the model: images (no extractors) or standardized feature vectors."""
        if not self.extractors:
            return make_splits(raw, train_index, val_index, device)
        shape = tuple(raw.train.images.shape[1:])
        settled = self.with_extractors(  # what depends on the image size (HOG's cell_size: auto)
            {name: e.for_shape(shape) if hasattr(e, "for_shape") else e for name, e in self.extractors.items()}
        )
        parts = [f"{e.describe(shape)}: {e.size(shape)}" for e in settled.extractors.values()]
        log.info("features: %s numbers per image (%s)", f"{settled.size(shape):,}", ", ".join(parts))
        # learn what is learned (bow's codebook) from the train part alone, never from val or test images
        fitted = settled.with_extractors(
            {
                name: e.fit(raw.train.images[train_index], device, self.cache) if hasattr(e, "fit") else e
                for name, e in settled.extractors.items()
            }
        )
        train = fitted.cached(raw.train.images, dataset, "train", device)
        test = fitted.cached(raw.test.images, dataset, "test", device)
        return feature_splits(fitted, raw, train, test, train_index, val_index)

    def with_extractors(self, extractors: dict[str, Extractor]) -> Features:
        """These features with other extractors (settled for an image size, or fitted to a partition's train
        images): the run's own object stays as its config built it."""
        other = copy.copy(self)
        other.extractors = extractors
        return other

    def size(self, shape: tuple[int, int, int]) -> int:
        return sum(e.size(shape) for e in self.extractors.values())

    def planned_size(self, shape: tuple[int, int, int]) -> int:
        """size() before make_splits has settled what depends on the image size (HOG's cell_size: auto)."""
        return sum((e.for_shape(shape) if hasattr(e, "for_shape") else e).size(shape) for e in self.extractors.values())

    def cached(self, images: torch.Tensor, dataset: str, split: str, device: torch.device) -> torch.Tensor:
        """The features of one official split: from the cache when it has them, else computed (and cached)."""
        rows, columns = len(images), self.size(tuple(images.shape[1:]))
        key = {
            "dataset": dataset.lower(),
            "split": split,
            "images": images_digest(images),
            "extractors": {name: [type(e).__name__, parameters(e)] for name, e in self.extractors.items()},
        }
        if (
            self.cache is not None
            and (stored := self.cache.load(key, {"features": (torch.float32, (rows, columns))})) is not None
        ):
            log.info("features: %s %s loaded from %s", dataset, split, self.cache.path(key))
            return stored["features"].to(device)
        started = time.perf_counter()
        features = self.extract(images, device)
        seconds = time.perf_counter() - started
        where = self.cache.save(key, {"features": features}) if self.cache is not None else None
        log.info(
            "features: %s %s (%s images) computed in %.1f s%s",
            dataset,
            split,
            f"{rows:,}",
            seconds,
            f", cached in {where}" if where else "",
        )
        return features

    def extract(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """float32 `[N, size]` on the device: all extractors, chunk by chunk, side by side."""
        out = torch.empty(len(images), self.size(tuple(images.shape[1:])), device=device)
        for start in range(0, len(images), CHUNK):
            chunk = images[start : start + CHUNK].to(device)
            out[start : start + CHUNK] = torch.cat([extractor(chunk) for extractor in self.extractors.values()], 1)
        return out


def parameters(extractor: Extractor) -> dict:
    """What an extractor's features depend on besides the images, for the cache's key: its `cache_key()` where it has
    one (a network's content, not its file's name), else all its fields."""
    return extractor.cache_key() if hasattr(extractor, "cache_key") else asdict(extractor)
