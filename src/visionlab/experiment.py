"""One run, straight through: config -> data -> model -> fit -> test once -> metrics.json."""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from visionlab.config import build, validate
from visionlab.data import ImageDataset, holdout_indices, make_splits
from visionlab.reporting.metrics_file import write_metrics
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.visual_log import VisualLog, VisualSettings
from visionlab.training.device import resolve_device
from visionlab.training.loop import evaluate, fit, memorize, steps_per_epoch

log = logging.getLogger("visionlab")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    validate(cfg)
    visual_settings: VisualSettings = build(cfg, "logging")
    started = time.perf_counter()
    trainer = cfg.trainer
    if trainer.threads:
        torch.set_num_threads(trainer.threads)
    device = resolve_device(trainer.device)
    log.info("device: %s (%d CPU threads)", device, torch.get_num_threads())
    seed_everything(cfg.seed)

    dataset: ImageDataset = build(cfg, "dataset")
    raw = dataset.load()
    train_index, val_index = holdout_indices(len(raw.train), dataset.val_fraction, cfg.seed)
    splits = make_splits(raw, train_index, val_index, device)
    del raw
    log.info(
        "data: %s, %d train / %d val / %d test images of shape %s, %d classes",
        type(dataset).__name__, len(splits.train), len(splits.val), len(splits.test),
        "x".join(map(str, splits.in_shape)), splits.num_classes,
    )

    model = build(cfg, "model", in_shape=splits.in_shape, num_classes=splits.num_classes).to(device)
    log.info("model: %s with %s trainable parameters", type(model).__name__, f"{count_trainable(model):,}")
    reporter = Reporter(run_dir, trainer.epochs, trainer.log_every_n_steps)
    visuals = VisualLog(visual_settings, reporter, model, splits, trainer.epochs)
    try:
        visuals.start()
        if count_trainable(model):
            batch_size = len(splits.train) if trainer.batch_size == "all" else trainer.batch_size
            loss_fn = build(cfg, "loss")
            penalty = build(cfg, "regularization")(model.parameters())
            optimizer = build(cfg, "optimizer")(model.parameters())
            schedule = build(cfg, "scheduler")(
                optimizer, epochs=trainer.epochs, steps_per_epoch=steps_per_epoch(len(splits.train), batch_size),
            )
            result = fit(
                model, splits, loss_fn, optimizer, schedule, reporter,
                penalty=penalty, augment=dataset.augment, grad_clip=trainer.grad_clip,
                epochs=trainer.epochs, batch_size=batch_size,
                eval_batch_size=trainer.eval_batch_size, seed=cfg.seed, visuals=visuals,
            )
        else:
            log.info("%s has no trainable parameters: loss, optimizer and scheduler are not used", type(model).__name__)
            loss_fn = None
            result = memorize(model, splits, reporter, eval_batch_size=trainer.eval_batch_size)
        test = evaluate(model, splits.test, loss_fn, trainer.eval_batch_size, watch=visuals.watch())  # the one and only look at test
        visuals.finish(result.steps, test)
        metrics: dict[str, Any] = {
            "train/loss": result.train["loss"], "train/acc": result.train["acc"],
            "train/data_loss": result.train.get("data_loss"), "train/reg_loss": result.train.get("reg_loss"),
            "val/loss": result.val["loss"], "val/acc": result.val["acc"],
            "test/loss": test["loss"], "test/acc": test["acc"],
            "epochs": result.epochs, "steps": result.steps,
            "seconds": round(time.perf_counter() - started, 3), "device": str(device), "status": "completed",
            **result.extra,
        }
        reporter.scalars({"test/loss": test["loss"], "test/acc": test["acc"]}, result.steps)
        write_metrics(run_dir / "metrics.json", metrics)
    finally:
        reporter.close()
    reporter.finish(metrics, run_dir)
    return metrics


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
