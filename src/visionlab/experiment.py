"""One run: every part built once from its config group, then each partition trained the one way.

A holdout is one (train, val) partition of the training images; k-fold is k of them, plus the
final model on all of them when `split.final_test` asks. `train_partition` trains one, whichever
it is, so signals, checkpoints, pictures and divergence hold for every fold, and a stopped k-fold
run resumes in the fold and at the step where it stopped. Test is seen once, by the partition
whose `test` is set. The run directory, metrics.json and exit codes: docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from visionlab import budget, provenance
from visionlab.compiled import eager
from visionlab.config import build, first_use, validate
from visionlab.cross_validation import final_model_overrides, final_model_trainer, summarize_folds
from visionlab.data import ImageDataset, RawData, Splits
from visionlab.data.folds import Holdout, KFold, Part
from visionlab.errors import DiskFull, Interrupted, Pruned, RunStopped, UserError, writing
from visionlab.features import Features, FeatureSplits
from visionlab.optimization import Schedule, constant
from visionlab.reporting.callbacks import Pictures, Progress
from visionlab.reporting.hparams import run_hparams
from visionlab.reporting.layer_summary import report_layers
from visionlab.reporting.metrics_file import write_metrics
from visionlab.reporting.pictures import PictureList, PictureLog, Subject
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.summary import command_line
from visionlab.training.callbacks import AverageWeights, SaveAndStop, StopOnRequest
from visionlab.training.checkpoint import Checkpoints
from visionlab.training.device import resolve_device
from visionlab.training.early_stopping import StopEarly, best_epoch, restore_best
from visionlab.training.lookahead import Lookahead
from visionlab.training.loop import FitResult, LossFn, Objective, evaluate, fit, memorize, steps_per_epoch
from visionlab.training.lr_find import RangeRecord, RangeTest, suggestion, warms_up
from visionlab.training.precision import Precision, slow_choice
from visionlab.training.precision import resolved as resolved_precision
from visionlab.training.resume import load_resume_state, resume_config
from visionlab.training.settings import TrainerSettings
from visionlab.training.signals import StopRequest
from visionlab.training.speed import configure_torch, prepare_model
from visionlab.training.state import TrainingState
from visionlab.training.threads import ShareCores, SharedThreads
from visionlab.trial_pruning import ReportToTrial, TrialPruning
from visionlab.tta import with_tta

log = logging.getLogger("visionlab")


@dataclass
class Parts:
    """What a run is made of, built from its config groups once; nothing below `run` sees the config."""

    dataset: ImageDataset  # its augmentation already limited to what the features allow
    features: Features
    split: Holdout | KFold
    model: Callable[..., torch.nn.Module]  # (in_shape=, num_classes=) -> a fresh model
    loss_fn: LossFn
    penalty: Callable  # (parameters) -> R(W)
    optimizer: Callable  # (parameters) -> optimizer
    schedule: Callable[..., Schedule]  # (optimizer, epochs=, steps_per_epoch=) -> schedule
    trainer: TrainerSettings
    pictures: PictureList
    seed: int
    objective: str
    config: dict[str, Any]  # resolved: what checkpoints carry, so vl-eval and resume need nothing else
    hparams: dict[str, Any]  # the run's row in TensorBoard's HParams tab
    range_test: RangeTest | None = None  # lr_find=true: a learning-rate range test instead of training
    # a pruned Optuna search's trial, or inactive
    pruning: TrialPruning = dataclasses.field(default_factory=TrialPruning)
    summary_only: bool = False  # summary_only=true: the layer table, then exit
    layers: str = ""  # the first model's layer table (markdown), once built: for the run's summary.md
    threads: SharedThreads | None = None  # the run's share of the CPU cores, looked at again as training goes


def build_parts(cfg: DictConfig) -> Parts:
    """Checked first (config.validate), then built, before any data is loaded."""
    validate(cfg)
    features: Features = build(cfg, "features")
    features.check_model(cfg.model)
    dataset: ImageDataset = build(cfg, "dataset")
    dataset.augment = features.augment(dataset.augment)
    return Parts(
        dataset=dataset,
        features=features,
        split=build(cfg, "split"),
        model=build(cfg, "model", _partial_=True),
        loss_fn=build(cfg, "loss"),
        penalty=build(cfg, "regularization"),
        optimizer=build(cfg, "optimizer"),
        schedule=build(cfg, "scheduler"),
        trainer=build(cfg, "trainer"),
        pictures=build(cfg, "logging"),
        seed=cfg.seed,
        objective=cfg.objective,
        config=OmegaConf.to_container(cfg, resolve=True),
        hparams=run_hparams(cfg),
        range_test=build(cfg, "lr_range") if cfg.lr_find else None,
        pruning=TrialPruning.from_config(),
        summary_only=cfg.summary_only,
    )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One run into `run_dir`, which Hydra has made for the CLI; a caller that names a new folder gets it made."""
    run_dir.mkdir(parents=True, exist_ok=True)
    resume = load_resume_state(cfg, run_dir)
    if resume is not None:
        cfg = resume_config(resume, cfg)
    parts = build_parts(cfg)
    started = time.perf_counter() - (resume["seconds"] if resume else 0.0)
    device = resolve_device(parts.trainer.device)
    configure_torch(device)
    parts.threads = SharedThreads(parts.trainer.threads, run_dir)
    try:
        return run_parts(parts, resume, device, started, run_dir)
    finally:
        parts.threads.close()


def run_parts(
    parts: Parts, resume: dict[str, Any] | None, device: torch.device, started: float, run_dir: Path
) -> dict[str, Any]:
    log.info(
        "device: %s (%d CPU threads), precision %s",
        device,
        torch.get_num_threads(),
        resolved_precision(parts.trainer.precision, device),
    )
    if warning := slow_choice(parts.trainer.precision, device):
        log.warning(warning)
    if parts.threads is not None:
        parts.threads.say_start()
    seed_everything(parts.seed)
    raw = load_data(parts, device, training=True)
    origin = provenance.start(run_dir, device, raw.files, resume)
    plan = parts.split.plan(raw.train.labels, parts.seed)
    if len(plan) > 1:
        log.info(
            "data: %s, %d training images in %d stratified folds, %d test images",
            type(parts.dataset).__name__,
            len(raw.train),
            sum(not part.final for part in plan),
            len(raw.test),
        )
    if parts.range_test is not None:
        return find_lr(parts, raw, plan[0], device, run_dir, started)
    if parts.summary_only:
        splits = partition_splits(parts, raw, plan[0], device)
        report_layers(fresh_model(parts, splits, device), splits.in_shape, run_dir, command_line())
        log.info("summary_only=true: the layer table is in %s; nothing was trained", run_dir / "summary.md")
        return {"status": "summary_only"}
    done = [FitResult(**result) for result in resume.get("partitions_done", [])] if resume else []
    run_reporter, test = None, None
    with StopRequest(parts.trainer.on_hangup) as stop:
        try:
            with writing(run_dir, "the run's files"):  # a full disk anywhere in training stops as DiskFull
                for index, part in enumerate(plan[len(done) :], start=len(done)):
                    resumed = resume if resume is not None and index == resume.get("partition", 0) else None
                    overrides = final_model_overrides(done) if part.final else {}
                    trained = (
                        dataclasses.replace(parts, trainer=final_model_trainer(parts.trainer, done))
                        if part.final
                        else parts
                    )
                    at_step = resumed["position"]["step"] if resumed and "position" in resumed else None
                    reporter = Reporter(
                        run_dir / part.folder,
                        parts.trainer.epochs,
                        parts.trainer.log_every_n_steps,
                        resumed_at_step=at_step,
                        later_partitions=len(plan) - index - 1,
                        stops_early=parts.trainer.early_stopping.enabled,
                    )
                    checkpoints = Checkpoints(
                        run_dir / part.folder,
                        parts.objective,
                        parts.config,
                        started,
                        best=resumed["best_value"] if resumed else None,
                        run_last=run_dir / "last.pt",
                        provenance=origin,
                    )
                    checkpoints.run_state = {
                        "partition": index,
                        "partitions_done": [stored(r) for r in done],
                        "model_overrides": overrides,
                        "folder": part.folder,
                    }
                    try:
                        result, test = train_partition(
                            trained,
                            raw,
                            part,
                            device,
                            reporter,
                            checkpoints,
                            stop,
                            resumed,
                            overrides,
                            run_dir,
                            first_step=index * parts.trainer.epochs,
                        )
                    except BaseException:
                        with contextlib.suppress(DiskFull):  # the write that first found no space is the one to tell
                            reporter.close()
                        raise
                    if part.folder:
                        reporter.close()
                    else:
                        run_reporter = reporter  # the holdout's: publish() adds the run's last words to it
                    if not part.final:
                        done.append(result)
        except RunStopped as exc:  # metrics.json says how it ended: a k-fold run's folds so far make no estimate
            nothing = FitResult({}, {}, 0, 0)  # a full disk outside fit(): before training, or at the test
            so_far = (
                (exc.result or nothing) if len(plan) == 1 else FitResult({}, {}, 0, 0, {"cv/folds_done": len(done)})
            )
            metrics = final_metrics(so_far, None, started, device, exc.status)
            with contextlib.suppress(DiskFull):  # where it still fits
                write_metrics(run_dir / "metrics.json", metrics)
            if isinstance(exc, Pruned):
                return metrics  # a normal end for a sweep's job: the study has its value
            if not isinstance(exc, DiskFull):  # cli says that one, wherever it stopped the run
                log.error("%s%s", f"{plan[len(done)].title}: " if len(plan) > 1 else "", exc)
            saved = [name for name in ("metrics.json", "last.pt") if (run_dir / name).exists()]
            hint = " (resume=PATH carries on)" if "last.pt" in saved else ""
            log.info("%s%s: %s", " and ".join(saved) or "nothing saved", hint, run_dir)
            if isinstance(exc, Interrupted):
                stop.pass_on()
            raise
    if len(plan) == 1:
        return publish(
            parts, run_reporter, final_metrics(result, test, started, device, "completed"), run_dir, {}, result.steps
        )
    summary = summarize_folds(done)
    log.info(
        "cross-validation: val/acc %.4f ± %.4f over %d folds",
        summary.val["acc"],
        summary.extra["cv/val_acc_std"],
        len(done),
    )
    metrics = final_metrics(summary, test, started, device, "completed")
    summary_tags = ("val/acc", "val/loss", "test/acc", "test/loss")
    return publish(
        parts,
        Reporter(run_dir, parts.trainer.epochs, parts.trainer.log_every_n_steps),
        metrics,
        run_dir,
        {k: v for k, v in metrics.items() if k in summary_tags or k.startswith("cv/")},
        0,
    )


def train_partition(
    parts: Parts,
    raw: RawData,
    part: Part,
    device: torch.device,
    reporter: Reporter,
    checkpoints: Checkpoints,
    stop: StopRequest,
    resume: dict[str, Any] | None,
    overrides: dict[str, Any],
    run_dir: Path,
    first_step: int = 0,
) -> tuple[FitResult, dict[str, Any] | None]:
    """A fresh model from the run's seed (folds differ by their data alone), trained or memorized,
    and tested if `part.test`."""
    splits = partition_splits(parts, raw, part, device)
    model = fresh_model(parts, splits, device, overrides)
    if not parts.layers:
        parts.layers = report_layers(model, splits.in_shape, run_dir, command_line()).markdown()
    visuals = PictureLog(parts.pictures, reporter, pictured(model, splits, parts.trainer.epochs))
    trains = count_trainable(model) > 0
    checkpoints.run_state["test_checkpoint"] = test_checkpoint(part, parts.trainer, trains)
    if resume is None or not trains:
        visuals.start()
    if trains:
        result = train_weights(
            parts, model, splits, reporter, visuals, checkpoints, stop, resume, part.test, first_step
        )
    else:
        log.info("%s has no trainable parameters: loss, optimizer and scheduler are not used", type(model).__name__)
        result = memorize(model, splits, reporter, eval_batch_size=parts.trainer.eval_batch_size)
        checkpoints.save(
            {"model": model.state_dict(), "done": {"train": result.train, "val": result.val}},
            {"val/acc": result.val["acc"]},
        )
        if stop:
            raise Interrupted(stop.signum, result)
    if not part.test:
        return result, None
    loss_fn = parts.loss_fn if trains else None
    with eager():  # the pictures' recorder watches through a hook
        test = evaluate(
            with_tta(model, parts.trainer.tta),
            splits.test,
            loss_fn,
            parts.trainer.eval_batch_size,
            watch=visuals.watch(),
        )  # the one and only look at test
    visuals.finish(result.steps, test)
    reporter.scalars({"test/loss": test["loss"], "test/acc": test["acc"]}, result.steps)
    return result, test


def pictured(model: torch.nn.Module, splits: Splits, epochs: int) -> Subject:
    """What the pictures picture, read off the model as it is today: one with a `neighbours` search (kNN) scores
    by votes, and its `k` of them vote. (The learners will say this themselves.)"""
    searches = callable(getattr(model, "neighbours", None))
    return Subject(
        model,
        splits,
        epochs,
        on_features=isinstance(splits, FeatureSplits),
        votes=searches,
        neighbours=model.neighbours if searches else None,
        voters=(lambda: model.k if isinstance(getattr(model, "k", None), int) else None) if searches else None,
    )


def test_checkpoint(part: Part, trainer: TrainerSettings, trains: bool) -> str | None:
    """Which of the partition's files holds the weights its test is taken on, as its checkpoints record it for
    `vl-eval RUN_DIR` (docs/architecture.md, "Checkpoints"); None for a partition that takes no test."""
    if not part.test:
        return None
    return "best.pt" if trains and trainer.tests_best() else "last.pt"


def train_weights(
    parts: Parts,
    model: torch.nn.Module,
    splits: Splits,
    reporter: Reporter,
    visuals: PictureLog,
    checkpoints: Checkpoints,
    stop: StopRequest,
    resume: dict[str, Any] | None,
    will_test: bool,
    first_step: int,
) -> FitResult:
    """fit() with every callback; the weights that will be tested are best.pt's if trainer.test_on says so."""
    trainer = parts.trainer
    first_use(model, parts.loss_fn, splits)
    prepare_model(model, channels_last=trainer.channels_last, compile=trainer.compile)
    penalty = parts.penalty(model.parameters())
    optimizer = parts.optimizer(model.parameters())
    steps = steps_per_epoch(len(splits.train), trainer.images_per_step(len(splits.train)))
    lookahead = Lookahead(model, total_steps=trainer.epochs * steps, every=trainer.ema) if trainer.ema else None
    state = TrainingState(
        model,
        optimizer,
        parts.schedule(optimizer, epochs=trainer.epochs, steps_per_epoch=steps),
        Precision(trainer.precision, splits.train.labels.device),
        torch.Generator().manual_seed(parts.seed),
        lookahead=lookahead,
    )
    if resume is not None:
        state.load_state_dict(resume)
        reporter.val_acc.update({epoch: metrics["val/acc"] for epoch, metrics in state.history.items()})
    callbacks = [Progress(reporter), Pictures(visuals), SaveAndStop(checkpoints, trainer.checkpoint_every_steps, stop)]
    if parts.threads is not None:
        callbacks.append(ShareCores(parts.threads))
    if lookahead is not None:
        callbacks.insert(0, AverageWeights(lookahead))  # before anything saves or reports the weights
    if parts.pruning.active:  # before early stopping: the trial hears of every epoch
        last_epoch = trainer.epochs if will_test else None
        callbacks.append(ReportToTrial(parts.pruning, parts.objective, first_step, last_epoch))
    if trainer.early_stopping.enabled:
        patience = trainer.early_stopping.patience
        log.info(
            "early stopping: up to %d epochs, ending once %s has not improved by more than %g for %d epoch%s "
            "(trainer.early_stopping.patience=null trains every epoch)",
            trainer.epochs,
            parts.objective,
            trainer.early_stopping.min_delta,
            patience,
            "s" * (patience != 1),
        )
        callbacks.append(StopEarly(trainer.early_stopping, parts.objective))
    result = fit(state, splits, parts.dataset.augment, Objective(parts.loss_fn, penalty), trainer, callbacks)
    if trainer.early_stopping.enabled:
        result.extra = {
            "stopped_early": False,
            "best_epoch": best_epoch(state.history, parts.objective),
            **result.extra,
        }
    if (
        will_test
        and trainer.tests_best()
        and (tested := restore_best(model, state.history, parts.objective, checkpoints.best)) is not None
    ):
        log.info(
            "test_on=best: the weights of epoch %d (best.pt) take the test; metrics.json's train/ and val/ are that "
            "epoch's",
            tested,
        )
        epoch = state.history[tested]
        result.train = {key: epoch[f"train/{key}"] for key in ("loss", "data_loss", "reg_loss", "acc")}
        result.val = {"loss": epoch["val/loss"], "acc": epoch["val/acc"]}
        result.extra["tested_epoch"] = tested
    return result


def find_lr(
    parts: Parts, raw: RawData, part: Part, device: torch.device, run_dir: Path, started: float
) -> dict[str, Any]:
    """The range test on the first partition's train split, with the run's model, loss and optimizer;
    no checkpoint, no test."""
    splits = partition_splits(parts, raw, part, device)
    model = fresh_model(parts, splits, device)
    if not count_trainable(model):
        raise UserError(f"lr_find=true needs a model with trainable parameters: {type(model).__name__} has none")
    first_use(model, parts.loss_fn, splits)
    prepare_model(model, channels_last=parts.trainer.channels_last, compile=parts.trainer.compile)
    optimizer = parts.optimizer(model.parameters())
    test = parts.range_test
    steps = steps_per_epoch(len(splits.train), parts.trainer.images_per_step(len(splits.train)))
    settings = dataclasses.replace(parts.trainer, epochs=-(-test.steps // steps))
    state = TrainingState(
        model,
        optimizer,
        constant(optimizer, settings.epochs, steps),
        Precision(parts.trainer.precision, device),
        torch.Generator().manual_seed(parts.seed),
    )
    record = RangeRecord(test)
    log.info(
        "lr_find: the lr rises from %g to %g over %d steps (scheduler not used; the train split only)",
        test.min_lr,
        test.max_lr,
        test.steps,
    )
    with StopRequest(parts.trainer.on_hangup) as stop:
        fit(
            state,
            splits,
            parts.dataset.augment,
            Objective(parts.loss_fn, parts.penalty(model.parameters())),
            settings,
            [record, StopOnRequest(stop), *([ShareCores(parts.threads)] if parts.threads else [])],
        )
    edge = record.edge()
    suggested, rule = suggestion(edge, warmup=warms_up(parts.schedule, parts.trainer.epochs, steps))
    found = {
        "status": "lr_find",
        "suggested_lr": suggested,
        "rule": rule,
        "lowest_loss_lr": edge,
        "steps": len(record.lrs),
        "seconds": round(time.perf_counter() - started, 3),
        "lr": record.lrs,
        "loss": record.losses,
        "smoothed_loss": record.smoothed(),
    }
    write_metrics(run_dir / "lr_find.json", found)
    picture = record.chart(suggested, rule)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(run_dir / "lr_find.png")
    reporter = Reporter(run_dir, settings.epochs, parts.trainer.log_every_n_steps)
    reporter.image("lr_find/loss_vs_lr", picture, 0)
    reporter.close()
    log.info(
        "lr_find: suggested lr %.3g, %s, after %d steps: try optimizer.lr=%.2g; %s",
        suggested,
        rule,
        len(record.lrs),
        suggested,
        run_dir / "lr_find.png",
    )
    return found


def fresh_model(
    parts: Parts, splits: Splits, device: torch.device, overrides: dict[str, Any] | None = None
) -> torch.nn.Module:
    """Built afresh from the run's seed, so partitions differ by their data alone."""
    seed_everything(parts.seed)
    model = parts.model(in_shape=splits.in_shape, num_classes=splits.num_classes, **(overrides or {})).to(device)
    log.info("model: %s with %s trainable parameters", type(model).__name__, f"{count_trainable(model):,}")
    return model


def partition_splits(parts: Parts, raw: RawData, part: Part, device: torch.device) -> Splits:
    """The partition's train/val and the test split on the device, as the model sees them (features, normalization)."""
    splits = parts.features.make_splits(raw, part.train, part.val, device, type(parts.dataset).__name__)
    if part.final:
        log.info(
            "final model: all %d training images for %d epochs, then the test split once (its val/ in final/ is on "
            "training images)",
            len(splits.train),
            parts.trainer.epochs,
        )
    elif part.folder:
        log.info("%s: %d train / %d val images", part.title, len(splits.train), len(splits.val))
    else:
        log.info(
            "data: %s, %d train / %d val / %d test images of shape %s, %d classes",
            type(parts.dataset).__name__,
            len(splits.train),
            len(splits.val),
            len(splits.test),
            "x".join(map(str, splits.in_shape)),
            splits.num_classes,
        )
    return splits


def prepare_data(parts: Parts, device: torch.device, partition: int = 0, raw: RawData | None = None) -> Splits:
    """The splits of one partition of the plan, the same for a run and for `vl-eval` of its checkpoint
    (`raw`: if loaded)."""
    raw = raw if raw is not None else load_data(parts, device, training=False)
    return partition_splits(parts, raw, parts.split.plan(raw.train.labels, parts.seed)[partition], device)


def load_data(parts: Parts, device: torch.device, training: bool) -> RawData:
    """The dataset's images, once what they, the model and its training will take is known to fit (budget.py)."""
    return parts.dataset.load(
        lambda plan: budget.check(budget.estimate(plan, parts.model, parts.features, parts.trainer, training), device)
    )


def publish(
    parts: Parts,
    reporter: Reporter,
    metrics: dict[str, Any],
    run_dir: Path,
    final_scalars: dict[str, float | None],
    step: int,
) -> dict[str, Any]:
    """The end of a completed run: last scalars, HParams, metrics.json, the summary."""
    try:
        reporter.scalars(final_scalars, step)
        reporter.hparams(parts.hparams, metrics)
        write_metrics(run_dir / "metrics.json", metrics)
    finally:
        reporter.close()
    reporter.finish(metrics, run_dir, parts.layers)
    return metrics


def stored(result: FitResult) -> dict[str, Any]:
    """A finished partition's result as a checkpoint holds it: plain values only."""
    plain = asdict(result)
    plain["val"] = {k: v for k, v in result.val.items() if k != "confusion"}
    return plain


def final_metrics(
    result: FitResult, test: dict[str, Any] | None, started: float, device: torch.device, status: str
) -> dict[str, Any]:
    """metrics.json: what exists, under the TensorBoard tag names; test/* only once test was seen."""
    return {
        "train/loss": result.train.get("loss"),
        "train/acc": result.train.get("acc"),
        "train/data_loss": result.train.get("data_loss"),
        "train/reg_loss": result.train.get("reg_loss"),
        "val/loss": result.val.get("loss"),
        "val/acc": result.val.get("acc"),
        "test/loss": test["loss"] if test else None,
        "test/acc": test["acc"] if test else None,
        "epochs": result.epochs,
        "steps": result.steps,
        "seconds": round(time.perf_counter() - started, 3),
        "device": str(device),
        "status": status,
        **result.extra,
    }


def count_trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
