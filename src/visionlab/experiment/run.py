"""One run: resume or start, plan the partitions, train each the one way, report.

A holdout is one (train, val) partition of the training images; k-fold is k of them, plus the
final model on all of them when `split.final_test` asks. Every partition goes through
`PartitionTraining`, so signals, checkpoints, pictures and divergence hold for every fold, and a
stopped k-fold run resumes in the fold and at the step where it stopped. Test is seen once, by
the partition whose `test` is set. The run directory, metrics.json and exit codes:
docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from visionlab import patches, provenance
from visionlab.checkpoint_format import Checkpoint
from visionlab.cross_validation import summarize_folds
from visionlab.data import RawData
from visionlab.data.folds import Partition
from visionlab.errors import DiskFull, Interrupted, Pruned, RunStopped, writing
from visionlab.experiment.components import (
    Components,
    build_components,
    fresh_model,
    load_data,
    partition_splits,
    seed_everything,
)
from visionlab.experiment.context import RunContext
from visionlab.experiment.lr_range import find_lr
from visionlab.experiment.partition import PartitionTraining
from visionlab.reporting.layer_summary import report_layers
from visionlab.reporting.metrics_file import write_metrics
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.summary import command_line
from visionlab.training import distributed
from visionlab.training.device import resolve_device
from visionlab.training.epoch_budget import AUTO
from visionlab.training.learners import MemorizingLearner
from visionlab.training.loop import FitResult, steps_per_epoch
from visionlab.training.precision import resolved as resolved_precision
from visionlab.training.precision import slow_choice
from visionlab.training.resume import load_resume_state, resume_config
from visionlab.training.signals import StopRequest
from visionlab.training.speed import configure_torch
from visionlab.training.threads import SharedThreads

log = logging.getLogger("visionlab")

NOTHING = FitResult({}, {}, 0, 0)  # a run stopped before any partition had a result


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """One run into `run_dir`, which Hydra has made for the CLI; a caller that names a new folder gets it made.

    On several processes every rank runs this; rank 0 alone makes and writes `run_dir` (`written_here`), which the
    others may not see (another node's disk)."""
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
    resume = load_resume_state(cfg, run_dir)
    if resume is not None:
        cfg = resume_config(resume, cfg)
    components = build_components(cfg)
    if distributed.world_size() > 1 and not takes_part(components):
        return {}  # rank 0 carries on alone
    with written_here(run_dir) as folder, patches.eager_without_dynamo():
        return run_in(components, folder, resume)


def run_in(components: Components, run_dir: Path, resume: Checkpoint | None) -> dict[str, Any]:
    started = time.perf_counter() - (resume.seconds if resume else 0.0)
    device = distributed.device(resolve_device(components.trainer.device))
    configure_torch(device)
    threads = SharedThreads(components.trainer.threads, run_dir)
    try:
        say_device(components, device, threads)
        seed_everything(components.seed)
        raw = load_data(components, device, training=True)
        origin = provenance.start(run_dir, device, raw.files, resume)
        plan = components.split.plan(raw.train.labels, components.seed)
        components = with_epoch_budget(components, plan[0])
        if len(plan) > 1:
            log.info(
                "data: %s, %d training images in %d stratified folds, %d test images",
                type(components.dataset).__name__,
                len(raw.train),
                sum(not partition.final for partition in plan),
                len(raw.test),
            )
        if components.summary_only and components.range_test is None:  # lr_find=true wins
            return summarize_layers(components, raw, plan[0], device, run_dir)
        with StopRequest(components.trainer.on_hangup) as stop:
            context = RunContext(run_dir, device, started, stop, threads, origin, resume)
            if components.range_test is not None:
                return find_lr(components, context, raw, plan[0])
            return train_plan(components, context, raw, plan)
    finally:
        threads.close()


def with_epoch_budget(components: Components, partition: Partition) -> Components:
    """`trainer.epochs=auto` made a number for this run's train split (training/epoch_budget.py), once its size is
    known; the log says what it chose."""
    trainer = components.trainer
    if trainer.epochs != AUTO:
        return components
    images = len(partition.train)
    steps = steps_per_epoch(
        images, trainer.images_per_step(images), drop_last=trainer.drop_last, ranks=distributed.world_size()
    )
    budgeted = trainer.for_steps_per_epoch(steps)
    budget = trainer.epoch_budget
    if budgeted.epochs > budget.epochs:  # a train split too small for the budget's epochs
        log.info(
            "epochs=auto: %d epochs of %d step%s, to make the budget's %d steps (trainer.epoch_budget), every one of "
            "them%s",
            budgeted.epochs,
            steps,
            "s" * (steps != 1),
            budget.min_steps,
            ", with no early stopping: the last weights take the test" if trainer.early_stopping.enabled else "",
        )
    else:
        log.info(
            "epochs=auto: %d epochs of %d steps (trainer.epoch_budget%s)",
            budgeted.epochs,
            steps,
            f"; early stopping waits for {budget.min_steps} steps" if budgeted.early_stopping.enabled else "",
        )
    return dataclasses.replace(components, trainer=budgeted)


def takes_part(components: Components) -> bool:
    """Whether this rank of a run on several processes goes on with it: every rank, which train it together. A kNN
    (which memorizes, and needs no second process), a range test and summary_only run on rank 0 alone: the others
    leave the group and end, and the log says so once."""
    alone = (
        "model memorizes its train split (kNN)"
        if isinstance(components.learner, MemorizingLearner)
        else "lr_find=true"
        if components.range_test is not None
        else "summary_only=true"
        if components.summary_only
        else None
    )
    if alone is None:
        return True
    ranks, main = distributed.world_size(), distributed.is_main()
    distributed.leave()
    if main:
        log.info("trainer.devices: this %s, so 1 of the %d processes runs it; the others end", alone, ranks)
    return main


@contextlib.contextmanager
def written_here(run_dir: Path) -> Iterator[Path]:
    """Where this process writes the run's files: `run_dir` on rank 0; on the other ranks of a run on several
    processes, a private folder removed at the end (and with the launcher's temporary folder, where vl-train
    started the ranks: ranks.py), so that the run folder holds one run's files, written once, while every rank runs
    the same code (the same checkpoints, which best.pt's weights restore from)."""
    if distributed.is_main():
        yield run_dir
        return
    scratch = Path(tempfile.mkdtemp(prefix=f"visionlab-rank{distributed.rank()}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def say_device(components: Components, device: torch.device, threads: SharedThreads) -> None:
    precision = components.trainer.precision
    ranks = distributed.world_size()
    log.info(
        "device: %s (%d CPU threads%s), precision %s",
        device,
        torch.get_num_threads(),
        f" each, {ranks} processes with a share of every batch of {components.trainer.batch_size}" if ranks > 1 else "",
        resolved_precision(precision, device),
    )
    if warning := slow_choice(precision, device):
        log.warning(warning)
    threads.say_start()


def summarize_layers(
    components: Components, raw: RawData, partition: Partition, device: torch.device, run_dir: Path
) -> dict[str, Any]:
    """summary_only=true: the layer table in the log and summary.md, nothing trained."""
    splits = partition_splits(components, raw, partition, device)
    report_layers(fresh_model(components, splits, device), splits.in_shape, run_dir, command_line())
    log.info("summary_only=true: the layer table is in %s; nothing was trained", run_dir / "summary.md")
    return {"status": "summary_only"}


def train_plan(components: Components, context: RunContext, raw: RawData, plan: Sequence[Partition]) -> dict[str, Any]:
    """Each partition not yet done, then the run's metrics: the holdout's, or the folds' summary."""
    resume = context.resume
    done = [FitResult(**result) for result in resume.place.partitions_done] if resume else []
    layers, test = "", None
    try:
        with writing(context.folder, "the run's files"):  # a full disk anywhere in training stops as DiskFull
            for index in range(len(done), len(plan)):
                with PartitionTraining(components, context, plan, index, done) as training:
                    result, test = training.learn(raw, describe_layers=not layers)
                    layers = layers or training.layers
                    if len(plan) == 1:  # the holdout's own reporter has the run's last words
                        metrics = final_metrics(result, test, context, "completed")
                        publish(training.reporter, components, metrics, {}, result.steps, context.folder)
                        summary_by = training.reporter
                if not plan[index].final:
                    done.append(result)
    except RunStopped as exc:
        return stopped(exc, plan, done, context)
    if len(plan) > 1:
        summary = summarize_folds(done, components.learner)
        log.info(
            "cross-validation: val/acc %.4f ± %.4f over %d folds",
            summary.val["acc"],
            summary.extra["cv/val_acc_std"],
            len(done),
        )
        metrics = final_metrics(summary, test, context, "completed")
        summary_tags = ("val/acc", "val/loss", "test/acc", "test/loss")
        final_scalars = {k: v for k, v in metrics.items() if k in summary_tags or k.startswith("cv/")}
        summary_by = Reporter(context.folder, components.trainer.epochs, components.trainer.log_every_n_steps)
        with contextlib.closing(summary_by):
            publish(summary_by, components, metrics, final_scalars, 0, context.folder)
    summary_by.finish(metrics, context.folder, layers)
    return metrics


def publish(
    reporter: Reporter,
    components: Components,
    metrics: dict[str, Any],
    final_scalars: dict[str, float | None],
    step: int,
    run_dir: Path,
) -> None:
    """The end of a completed run: last scalars, HParams, metrics.json (the summary follows, once the events are
    closed)."""
    reporter.scalars(final_scalars, step)
    reporter.hparams(components.hparams, metrics)
    write_metrics(run_dir / "metrics.json", metrics)


def stopped(exc: RunStopped, plan: Sequence[Partition], done: list[FitResult], context: RunContext) -> dict[str, Any]:
    """metrics.json says how the run ended (a k-fold run's folds so far make no estimate), and the log says what
    was saved; a pruned trial returns (a normal end for a sweep's job: the study has its value), anything else
    is raised again."""
    so_far = (exc.result or NOTHING) if len(plan) == 1 else FitResult({}, {}, 0, 0, {"cv/folds_done": len(done)})
    metrics = final_metrics(so_far, None, context, exc.status)
    run_dir = context.folder
    with contextlib.suppress(DiskFull):  # where it still fits
        write_metrics(run_dir / "metrics.json", metrics)
    if isinstance(exc, Pruned):
        return metrics
    if not isinstance(exc, DiskFull):  # cli says that one, wherever it stopped the run
        log.error("%s%s", f"{plan[len(done)].title}: " if len(plan) > 1 else "", exc)
    saved = [name for name in ("metrics.json", "last.pt") if (run_dir / name).exists()]
    hint = " (resume=PATH carries on)" if "last.pt" in saved else ""
    log.info("%s%s: %s", " and ".join(saved) or "nothing saved", hint, run_dir)
    if isinstance(exc, Interrupted):
        context.stop.pass_on()
    raise exc


def final_metrics(result: FitResult, test: dict[str, Any] | None, context: RunContext, status: str) -> dict[str, Any]:
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
        "seconds": round(time.perf_counter() - context.started, 3),
        "device": str(context.device),
        "status": status,
        **result.extra,
    }
