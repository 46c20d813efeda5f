"""One run, straight through: config -> data -> model -> fit -> test once -> metrics.json.

With `split=kfold`, model -> fit runs once per fold (`cross_validate`), and test only if asked.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from visionlab.config import build, first_use, validate
from visionlab.cross_validation import summarize_folds
from visionlab.data import ImageDataset, RawData, Splits
from visionlab.data.augment import Augment
from visionlab.data.folds import Holdout, KFold
from visionlab.errors import Interrupted, RunStopped
from visionlab.features import Features
from visionlab.reporting.hparams import run_hparams
from visionlab.reporting.metrics_file import write_metrics
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.visual_log import VisualLog, VisualSettings
from visionlab.training.device import resolve_device
from visionlab.training.checkpoint import Checkpoints
from visionlab.training.loop import FitResult, LossFn, evaluate, fit, memorize, steps_per_epoch
from visionlab.training.precision import Precision
from visionlab.training.resume import load_resume_state, resume_config
from visionlab.training.signals import StopRequest
from visionlab.training.speed import configure_torch, prepare_model

log = logging.getLogger("visionlab")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    resume = load_resume_state(cfg, run_dir)
    if resume is not None:
        cfg = resume_config(resume, cfg)
    validate(cfg)
    visual_settings: VisualSettings = build(cfg, "logging")
    started = time.perf_counter() - (resume["seconds"] if resume else 0.0)
    trainer = cfg.trainer
    device = resolve_device(trainer.device)
    configure_torch(device, trainer.threads)
    log.info("device: %s (%d CPU threads)", device, torch.get_num_threads())
    seed_everything(cfg.seed)
    split: Holdout | KFold = build(cfg, "split")  # checked before any data is loaded
    if isinstance(split, KFold):
        return cross_validate(cfg, split, run_dir, visual_settings, device, started)

    dataset, splits = prepare_data(cfg, device)
    model = build(cfg, "model", in_shape=splits.in_shape, num_classes=splits.num_classes).to(device)
    log.info("model: %s with %s trainable parameters", type(model).__name__, f"{count_trainable(model):,}")
    reporter = Reporter(run_dir, trainer.epochs, trainer.log_every_n_steps,
                        resumed_at_step=resume["position"]["step"] if resume else None)
    checkpoints = Checkpoints(run_dir, cfg.objective, OmegaConf.to_container(cfg, resolve=True), started,
                              best=resume["best_value"] if resume else None)
    visuals = VisualLog(visual_settings, reporter, model, splits, trainer.epochs)
    try:
        with StopRequest(trainer.on_hangup) as stop:
            try:
                if resume is None:
                    visuals.start()
                else:
                    reporter.val_acc.update(resume["val_history"])
                result, loss_fn = train_model(cfg, model, splits, dataset.augment, reporter, visuals,
                                              checkpoints=checkpoints, stop=stop, resume=resume)
            except RunStopped as exc:
                metrics = final_metrics(exc.result, None, started, device, exc.status)
                write_metrics(run_dir / "metrics.json", metrics)
                log.error("%s", exc)
                log.info("metrics.json%s: %s", " and last.pt (resume=PATH carries on)" if checkpoints.last.exists() else "", run_dir)
                if isinstance(exc, Interrupted):
                    stop.pass_on()
                raise
        test = evaluate(model, splits.test, loss_fn, trainer.eval_batch_size, watch=visuals.watch())  # the one and only look at test
        visuals.finish(result.steps, test)
    except BaseException:
        reporter.close()
        raise
    metrics = final_metrics(result, test, started, device, "completed")
    return publish(cfg, reporter, metrics, run_dir, {"test/loss": test["loss"], "test/acc": test["acc"]}, result.steps)


def publish(cfg: DictConfig, reporter: Reporter, metrics: dict[str, Any], run_dir: Path,
            final_scalars: dict[str, float | None], step: int) -> dict[str, Any]:
    """The end of a completed run, single or k-fold: last scalars, HParams, metrics.json, the summary."""
    try:
        reporter.scalars(final_scalars, step)
        reporter.hparams(run_hparams(cfg), metrics)
        write_metrics(run_dir / "metrics.json", metrics)
    finally:
        reporter.close()
    reporter.finish(metrics, run_dir)
    return metrics


def train_model(
    cfg: DictConfig, model: torch.nn.Module, splits: Splits, augment: Augment, reporter: Reporter, visuals: VisualLog,
    *, checkpoints: Checkpoints | None = None, stop: StopRequest | None = None, resume: dict[str, Any] | None = None,
) -> tuple[FitResult, LossFn | None]:
    """Fit a model with parameters, or let one without (kNN) memorize splits.train; k-fold keeps no checkpoints."""
    trainer = cfg.trainer
    if count_trainable(model):
        loss_fn = build(cfg, "loss")
        first_use(model, loss_fn, splits)
        prepare_model(model, channels_last=trainer.channels_last, compile=trainer.compile)
        batch_size = len(splits.train) if trainer.batch_size == "all" else trainer.batch_size
        penalty = build(cfg, "regularization")(model.parameters())
        optimizer = build(cfg, "optimizer")(model.parameters())
        schedule = build(cfg, "scheduler")(
            optimizer, epochs=trainer.epochs, steps_per_epoch=steps_per_epoch(len(splits.train), batch_size),
        )
        result = fit(
            model, splits, loss_fn, optimizer, schedule, reporter,
            penalty=penalty, augment=augment, grad_clip=trainer.grad_clip,
            epochs=trainer.epochs, batch_size=batch_size,
            eval_batch_size=trainer.eval_batch_size, seed=cfg.seed, visuals=visuals,
            checkpoints=checkpoints, checkpoint_every_steps=trainer.checkpoint_every_steps,
            stop=stop, resume=resume, precision=Precision(trainer.precision, splits.train.labels.device),
        )
        return result, loss_fn
    log.info("%s has no trainable parameters: loss, optimizer and scheduler are not used", type(model).__name__)
    result = memorize(model, splits, reporter, eval_batch_size=trainer.eval_batch_size)
    if checkpoints is not None:
        checkpoints.save({"model": model.state_dict(), "done": {"train": result.train, "val": result.val}},
                         {"val/acc": result.val["acc"]})
    if stop:
        raise Interrupted(stop.signum, result)
    return result, None


def prepare_data(cfg: DictConfig, device: torch.device) -> tuple[ImageDataset, Splits]:
    """The train/val/test tensors on the device, the same for a run and for `vl-eval` of its checkpoint."""
    dataset, features, raw = load_data(cfg)
    train_index, val_index = build(cfg, "split").partition(raw.train.labels, cfg.seed)
    splits = features.make_splits(raw, train_index, val_index, device, type(dataset).__name__)
    del raw
    log.info(
        "data: %s, %d train / %d val / %d test images of shape %s, %d classes",
        type(dataset).__name__, len(splits.train), len(splits.val), len(splits.test),
        "x".join(map(str, splits.in_shape)), splits.num_classes,
    )
    return dataset, splits


def load_data(cfg: DictConfig) -> tuple[ImageDataset, Features, RawData]:
    """The dataset (its augmentation as the features allow) and its official train/test images."""
    features: Features = build(cfg, "features")
    features.check_model(cfg.model)
    dataset: ImageDataset = build(cfg, "dataset")
    dataset.augment = features.augment(dataset.augment)
    return dataset, features, dataset.load()


def cross_validate(
    cfg: DictConfig, split: KFold, run_dir: Path, visual_settings: VisualSettings, device: torch.device, started: float,
) -> dict[str, Any]:
    """k-fold: a fresh model per fold, logged under fold_<i>/; the test split only with split.final_test.

    No checkpoints. metrics.json holds the folds' means (`val/acc` is the objective) and `cv/...`.
    """
    dataset, features, raw = load_data(cfg)
    partitions = split.partitions(raw.train.labels, cfg.seed)
    log.info("data: %s, %d training images in %d stratified folds, %d test images", type(dataset).__name__,
             len(raw.train), len(partitions), len(raw.test))
    folds = []
    try:
        for fold, (train_index, val_index) in enumerate(partitions):
            log.info("fold %d of %d: %d train / %d val images", fold + 1, len(partitions), len(train_index), len(val_index))
            splits = features.make_splits(raw, train_index, val_index, device, type(dataset).__name__)
            folds.append(train_fold(cfg, dataset, splits, visual_settings, run_dir / f"fold_{fold}")[0])
        result = summarize_folds(folds)
        log.info("cross-validation: val/acc %.4f ± %.4f over %d folds", result.val["acc"], result.extra["cv/val_acc_std"], len(folds))
        test = None
        if split.final_test:
            everything = torch.arange(len(raw.train))
            log.info("final model: all %d training images, then the test split once (its val/ in final/ is on training images)", len(everything))
            final_cfg = OmegaConf.merge(cfg, {"model": {"k": result.extra["best_k"]}}) if "best_k" in result.extra else cfg
            splits = features.make_splits(raw, everything, everything, device, type(dataset).__name__)
            _, test = train_fold(final_cfg, dataset, splits, visual_settings, run_dir / "final", test=True)
    except RunStopped as exc:  # a diverged model voids the estimate: metrics.json says only how the run ended
        write_metrics(run_dir / "metrics.json", final_metrics(FitResult({}, {}, 0, 0), None, started, device, exc.status))
        log.error("%s: %s", "final model" if len(folds) == len(partitions) else f"fold {len(folds) + 1} of {len(partitions)}", exc)
        raise
    metrics = final_metrics(result, test, started, device, "completed")
    reporter = Reporter(run_dir, cfg.trainer.epochs, cfg.trainer.log_every_n_steps)
    summary_tags = ("val/acc", "val/loss", "test/acc", "test/loss")
    return publish(cfg, reporter, metrics, run_dir, {k: v for k, v in metrics.items() if k in summary_tags or k.startswith("cv/")}, 0)


def train_fold(
    cfg: DictConfig, dataset: ImageDataset, splits: Splits, visual_settings: VisualSettings, log_dir: Path, *, test: bool = False,
) -> tuple[FitResult, dict[str, Any] | None]:
    """A model built afresh from the run's seed (a kNN memorizes this fold only), so folds differ by their data alone."""
    seed_everything(cfg.seed)
    model = build(cfg, "model", in_shape=splits.in_shape, num_classes=splits.num_classes).to(splits.train.labels.device)
    reporter = Reporter(log_dir, cfg.trainer.epochs, cfg.trainer.log_every_n_steps)
    visuals = VisualLog(visual_settings, reporter, model, splits, cfg.trainer.epochs)
    try:
        visuals.start()
        result, loss_fn = train_model(cfg, model, splits, dataset.augment, reporter, visuals)
        if not test:
            return result, None
        scores = evaluate(model, splits.test, loss_fn, cfg.trainer.eval_batch_size, watch=visuals.watch())  # the one look at test
        visuals.finish(result.steps, scores)
        reporter.scalars({"test/loss": scores["loss"], "test/acc": scores["acc"]}, result.steps)
        return result, scores
    finally:
        reporter.close()


def final_metrics(result: FitResult, test: dict[str, Any] | None, started: float, device: torch.device, status: str) -> dict[str, Any]:
    """metrics.json: what exists, under the TensorBoard tag names; test/* only once test was seen."""
    return {
        "train/loss": result.train.get("loss"), "train/acc": result.train.get("acc"),
        "train/data_loss": result.train.get("data_loss"), "train/reg_loss": result.train.get("reg_loss"),
        "val/loss": result.val.get("loss"), "val/acc": result.val.get("acc"),
        "test/loss": test["loss"] if test else None, "test/acc": test["acc"] if test else None,
        "epochs": result.epochs, "steps": result.steps,
        "seconds": round(time.perf_counter() - started, 3), "device": str(device), "status": status,
        **result.extra,
    }


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
