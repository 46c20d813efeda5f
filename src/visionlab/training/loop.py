"""The training loop: one readable pass per epoch, evaluation under inference_mode.

Per step it does the gather, augmentation, forward (data loss + R(W)), backward, optional
clipping and optimizer step, and nothing else: running sums stay on the device and are read
once per epoch, so a GPU never waits on the host.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from visionlab.data import DeviceSplit, Splits
from visionlab.errors import Diverged, Interrupted, RunStopped
from visionlab.optimization import Schedule, current_lr
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.visual_log import VisualLog
from visionlab.training.checkpoint import Checkpoints, Position, restore_training_state, training_state
from visionlab.training.precision import Precision
from visionlab.training.signals import StopRequest

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

log = logging.getLogger("visionlab")


@dataclass
class FitResult:
    train: dict[str, float | None]
    val: dict[str, float | None]
    epochs: int
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)  # more metrics.json entries, e.g. kNN's val/acc@k and best_k


def usable_size(n: int, batch_size: int) -> int:
    """Drop a trailing batch of one image: BatchNorm cannot train on it and it adds only noise."""
    return n - 1 if batch_size > 1 and n % batch_size == 1 else n


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-usable_size(n, batch_size) // batch_size)


def fit(
    model: nn.Module,
    splits: Splits,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    reporter: Reporter,
    *,
    penalty: Callable[[], torch.Tensor],
    augment: Callable[[torch.Tensor], torch.Tensor],
    grad_clip: float | None,
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
    visuals: VisualLog | None = None,
    checkpoints: Checkpoints | None = None,
    checkpoint_every_steps: int | None = None,
    stop: StopRequest | None = None,
    resume: dict[str, Any] | None = None,
    precision: Precision | None = None,
) -> FitResult:
    """Minimize data loss + penalty() over the train split; augment touches training batches only.

    From `resume` (a checkpoint) it carries on at the very next step, so the run ends exactly as
    an uninterrupted one would. A stop request ends it at a step boundary, after saving last.pt.
    `precision` runs the forward pass in 16 bits (trainer.precision); R(W) stays in float32.
    """
    precision = precision or Precision()
    train = splits.train
    params = [p for p in model.parameters() if p.requires_grad]
    device = train.labels.device
    order_rng = torch.Generator().manual_seed(seed)
    n = usable_size(len(train), batch_size)
    steps = steps_per_epoch(len(train), batch_size)
    at, done = Position(), {"train": {}, "val": {}}  # done: the metrics of the last finished epoch
    if resume is not None:
        at, done = restore_training_state(resume, model, optimizer, schedule.scheduler, precision, order_rng, device)

    def save(epoch_metrics: dict[str, float | None] | None = None) -> None:
        if checkpoints is not None:
            checkpoints.save(training_state(model, optimizer, schedule.scheduler, precision, order_rng, at, done, reporter.val_acc), epoch_metrics)

    try:
        while at.epoch <= epochs:
            model.train()
            if at.batch == 0:
                at.order = torch.randperm(len(train), generator=order_rng)[:n].to(device)
                at.sums = [torch.zeros((), device=device), torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long)]
            data_loss_sum, reg_loss_sum, correct = at.sums  # updated in place, so a checkpoint sees them
            reporter.start_epoch(at.epoch, steps, done=at.batch)
            for index in at.order.split(batch_size)[at.batch:]:
                images, labels = train.batch(index)
                images = augment(images)
                with precision.autocast():
                    scores = model(images)
                    data_loss = loss_fn(scores, labels)
                reg_loss = penalty()
                loss = data_loss + reg_loss
                optimizer.zero_grad(set_to_none=True)
                precision.backward(loss)
                if grad_clip is not None:
                    precision.unscale(optimizer)
                    nn.utils.clip_grad_norm_(params, grad_clip)
                precision.step(optimizer)
                schedule.after_step()
                at.step += 1
                at.batch += 1
                data_loss_sum += data_loss.detach() * len(labels)
                reg_loss_sum += reg_loss.detach() * len(labels)
                correct += (scores.detach().argmax(1) == labels).sum()
                shown = reporter.step(at.epoch, at.step, loss, len(labels), lr=current_lr(optimizer))
                if shown is not None and not math.isfinite(shown):
                    raise diverged(shown, at.step, optimizer)
                if stop or (checkpoint_every_steps and at.step % checkpoint_every_steps == 0):
                    check_finite(data_loss_sum + reg_loss_sum, at.step, optimizer)
                    save()
                    if stop:
                        raise Interrupted(stop.signum)
            check_finite(data_loss_sum + reg_loss_sum, at.step, optimizer)
            data_loss_mean, reg_loss_mean = data_loss_sum.item() / n, reg_loss_sum.item() / n
            done["train"] = {
                "loss": data_loss_mean + reg_loss_mean, "data_loss": data_loss_mean, "reg_loss": reg_loss_mean,
                "acc": correct.item() / n,
            }
            done["val"] = evaluate(model, splits.val, loss_fn, eval_batch_size, watch=visuals.watch(at.epoch) if visuals else None)
            schedule.after_epoch(done["val"])
            epoch_metrics = {
                "train/loss": done["train"]["loss"], "train/data_loss": done["train"]["data_loss"],
                "train/reg_loss": done["train"]["reg_loss"], "train/acc": done["train"]["acc"],
                "val/loss": done["val"]["loss"], "val/acc": done["val"]["acc"], "lr": current_lr(optimizer),
            }
            reporter.end_epoch(at.epoch, at.step, epoch_metrics)
            if visuals is not None:
                visuals.end_epoch(at.epoch, at.step, done["val"])
            at = Position(epoch=at.epoch + 1, step=at.step)
            save(epoch_metrics)
            if stop:
                raise Interrupted(stop.signum)
    except RunStopped as stopped:
        stopped.result = FitResult(done["train"], done["val"], at.epoch - 1, at.step)
        raise
    return FitResult(done["train"], done["val"], epochs, at.step)


def check_finite(total: torch.Tensor, step: int, optimizer: torch.optim.Optimizer) -> None:
    """The epoch's loss sum turns nan or inf with the first bad step, so one read covers them all."""
    value = total.item()
    if not math.isfinite(value):
        raise diverged(value, step, optimizer)


def diverged(value: float, step: int, optimizer: torch.optim.Optimizer) -> Diverged:
    return Diverged(
        f"training diverged: the loss is {value} by step {step} (lr {current_lr(optimizer):.3g}); "
        "try a smaller optimizer.lr, trainer.grad_clip=1.0, or a scheduler with warmup"
    )


def memorize(model: nn.Module, splits: Splits, reporter: Reporter, *, eval_batch_size: int) -> FitResult:
    """"Training" for a model with no parameters (kNN): it stores the train split, then picks k on val.

    Such a model has `fit(train)`, a list of candidate `ks`, `scores_by_k(images)` (scores for every
    k from one neighbour search) and the `k` its forward() uses. Every k is scored on val, the best
    (ties: the smaller k) is kept for test: val/acc@k for each k, val/acc and best_k come out of it.
    """
    model.fit(splits.train)
    accuracy = accuracy_by_k(model, splits.val, eval_batch_size)
    model.k = max(accuracy, key=lambda k: (accuracy[k], -k))
    by_k = {f"val/acc@{k}": acc for k, acc in accuracy.items()}
    reporter.scalars({**by_k, "val/acc": accuracy[model.k]}, 0)
    log.info("%s  best k %d (chosen on val)", "  ".join(f"{tag} {acc:.4f}" for tag, acc in by_k.items()), model.k)
    return FitResult(
        {"loss": None, "acc": None}, {"loss": None, "acc": accuracy[model.k]}, epochs=0, steps=0,
        extra={**by_k, "best_k": model.k},
    )


@torch.inference_mode()
def accuracy_by_k(model: nn.Module, split: DeviceSplit, batch_size: int) -> dict[int, float]:
    """Accuracy over a whole split for every k of a nearest-neighbour model, one search per batch."""
    model.eval()
    correct = {k: torch.zeros((), device=split.labels.device, dtype=torch.long) for k in model.ks}
    for images, labels in split.in_order(batch_size):
        for k, scores in model.scores_by_k(images).items():
            correct[k] += (scores.argmax(1) == labels).sum()
    return {k: count.item() / len(split) for k, count in correct.items()}


@torch.inference_mode()
def evaluate(
    model: nn.Module, split: DeviceSplit, loss_fn: LossFn | None, batch_size: int,
    watch: Callable[[torch.Tensor, torch.Tensor], None] | None = None,
) -> dict[str, Any]:
    """Accuracy and mean loss over a whole split; loss is None for models a loss does not apply to.

    Also "confusion": a CPU tensor [C, C] counting images of true class t predicted as p at [t, p],
    one bincount per batch on the device. `watch(scores, labels)`, if given, sees every batch in order.
    """
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros((), device=device, dtype=torch.long)  # broadcasts to C*C counts at the first batch
    for images, labels in split.in_order(batch_size):
        scores = model(images)
        if loss_fn is not None:
            loss_sum += loss_fn(scores, labels) * len(labels)
        classes = scores.shape[1]
        confusion = confusion + torch.bincount(labels * classes + scores.argmax(1), minlength=classes * classes)
        if watch is not None:
            watch(scores, labels)
    n = len(split)
    confusion = confusion.view(classes, classes).cpu()
    return {"acc": confusion.trace().item() / n, "loss": loss_sum.item() / n if loss_fn is not None else None, "confusion": confusion}
