"""What a run is made of, built once from its config groups, and what every partition builds from it."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from visionlab import budget
from visionlab.config import build, target_of, validate
from visionlab.data import ImageDataset, RawData, Splits
from visionlab.data.folds import Holdout, KFold, Partition
from visionlab.features import Features
from visionlab.reporting.hparams import run_hparams
from visionlab.reporting.pictures import PictureList
from visionlab.training.learners import GradientLearner, Learner, MemorizingLearner
from visionlab.training.lr_find import RangeTest
from visionlab.training.settings import TrainerSettings
from visionlab.trial_pruning import TrialPruning

log = logging.getLogger("visionlab")


@dataclass(frozen=True)
class Components:
    """Every part of a run, built from its config groups before any data loads; nothing below `run` sees the
    config, and nothing changes them once built."""

    dataset: ImageDataset  # its augmentation already limited to what the features allow
    features: Features
    split: Holdout | KFold
    model: Callable[..., torch.nn.Module]  # (in_shape=, num_classes=) -> a fresh model
    learner: Learner  # how that model learns: by gradient, or by memorizing (kNN)
    trainer: TrainerSettings
    pictures: PictureList  # the logging group: which pictures, with their settings
    seed: int
    objective: str
    config: dict[str, Any]  # resolved: what checkpoints carry, so vl-eval and resume need nothing else
    hparams: dict[str, Any]  # the run's row in TensorBoard's HParams tab
    range_test: RangeTest | None = None  # lr_find=true: a learning-rate range test instead of training
    # a pruned Optuna search's trial, or inactive
    pruning: TrialPruning = dataclasses.field(default_factory=TrialPruning)
    summary_only: bool = False  # summary_only=true: the layer table, then exit


def build_components(cfg: DictConfig) -> Components:
    """Checked first (config.validate), then built, before any data is loaded."""
    validate(cfg)
    features: Features = build(cfg, "features")
    features.check_model(cfg.model)
    dataset: ImageDataset = build(cfg, "dataset")
    dataset.augment = features.augment(dataset.augment)
    model = build(cfg, "model", _partial_=True)
    trainer: TrainerSettings = build(cfg, "trainer")
    learner = (
        MemorizingLearner(trainer.eval_batch_size)
        if memorizes(model)
        else GradientLearner(
            loss_fn=build(cfg, "loss"),
            penalty=build(cfg, "regularization"),
            optimizer=build(cfg, "optimizer"),
            schedule=build(cfg, "scheduler"),
            augment=dataset.augment.with_seed(cfg.seed),
            seed=cfg.seed,
            objective=cfg.objective,
        )
    )
    return Components(
        dataset=dataset,
        features=features,
        split=build(cfg, "split"),
        model=model,
        learner=learner,
        trainer=trainer,
        pictures=build(cfg, "logging"),
        seed=cfg.seed,
        objective=cfg.objective,
        config=OmegaConf.to_container(cfg, resolve=True),
        hparams=run_hparams(cfg),
        range_test=build(cfg, "lr_range") if cfg.lr_find else None,
        pruning=TrialPruning.from_config(),
        summary_only=cfg.summary_only,
    )


def memorizes(model: Callable) -> bool:
    """Whether the model's class declares that it learns by memorizing its train split (kNN's `memorizes = True`):
    the one place a run decides which learner its model has."""
    return bool(getattr(target_of(model), "memorizes", False))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fresh_model(
    components: Components, splits: Splits, device: torch.device, overrides: dict[str, Any] | None = None
) -> torch.nn.Module:
    """Built afresh from the run's seed, so partitions differ by their data alone."""
    seed_everything(components.seed)
    model = components.model(
        in_shape=splits.in_shape,
        num_classes=splits.num_classes,
        **pixel_stats(components.model, splits),
        **(overrides or {}),
    )
    model = model.to(device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("model: %s with %s trainable parameters", type(model).__name__, f"{trainable:,}")
    return model


def pixel_stats(model: Callable, splits: Splits) -> dict[str, Any]:
    """`pixel_stats`, the training split's per-channel mean and std with which every image reaching the model was
    standardized, for a model that takes them: one that works on the pixels as they were (models/torchvision.py
    brings them to its pretrained weights' normalization). Its checkpoint keeps what it made of them."""
    if "pixel_stats" not in inspect.signature(target_of(model)).parameters:
        return {}
    return {"pixel_stats": (splits.mean, splits.std)}


def partition_splits(components: Components, raw: RawData, partition: Partition, device: torch.device) -> Splits:
    """The partition's train/val and the test split on the device, as the model sees them (features,
    normalization)."""
    splits = components.features.make_splits(
        raw, partition.train, partition.val, device, type(components.dataset).__name__
    )
    if partition.final:
        log.info(
            "final model: all %d training images for %d epochs, then the test split once (its val/ in final/ is on "
            "training images)",
            len(splits.train),
            components.trainer.epochs,
        )
    elif partition.folder:
        log.info("%s: %d train / %d val images", partition.title, len(splits.train), len(splits.val))
    else:
        log.info(
            "data: %s, %d train / %d val / %d test images of shape %s, %d classes",
            type(components.dataset).__name__,
            len(splits.train),
            len(splits.val),
            len(splits.test),
            "x".join(map(str, splits.in_shape)),
            splits.num_classes,
        )
    return splits


def prepare_data(
    components: Components, device: torch.device, partition: int = 0, raw: RawData | None = None
) -> Splits:
    """The splits of one partition of the plan, the same for a run and for `vl-eval` of its checkpoint
    (`raw`: if loaded)."""
    raw = raw if raw is not None else load_data(components, device, training=False)
    plan = components.split.plan(raw.train.labels, components.seed)
    return partition_splits(components, raw, plan[partition], device)


def load_data(components: Components, device: torch.device, training: bool) -> RawData:
    """The dataset's images, once what they, the model and its training will take is known to fit (budget.py)."""
    return components.dataset.load(
        lambda plan: budget.check(
            budget.estimate(plan, components.model, components.features, components.trainer, training), device
        )
    )
