"""The training loop: one readable pass per epoch, evaluation under inference_mode.

Per step it does the gather, augmentation, forward (data loss + R(W)), backward, optional
clipping and optimizer step, and nothing else: running sums stay on the device and are read
once per epoch, so a GPU never waits on the host.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from visionlab.data import DeviceSplit, Splits
from visionlab.optimization import Schedule, current_lr
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.visual_log import VisualLog

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
) -> FitResult:
    """Minimize data loss + penalty() over the train split; augment touches training batches only."""
    train = splits.train
    params = [p for p in model.parameters() if p.requires_grad]
    device = train.labels.device
    order_rng = torch.Generator().manual_seed(seed)
    n = usable_size(len(train), batch_size)
    steps = steps_per_epoch(len(train), batch_size)
    step = 0
    train_metrics: dict[str, float] = {}
    val_metrics: dict[str, float | None] = {}
    for epoch in range(1, epochs + 1):
        model.train()
        data_loss_sum = torch.zeros((), device=device)
        reg_loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        reporter.start_epoch(epoch, steps)
        order = torch.randperm(len(train), generator=order_rng)[:n].to(device)
        for index in order.split(batch_size):
            images, labels = train.batch(index)
            scores = model(augment(images))
            data_loss = loss_fn(scores, labels)
            reg_loss = penalty()
            loss = data_loss + reg_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            schedule.after_step()
            step += 1
            data_loss_sum += data_loss.detach() * len(labels)
            reg_loss_sum += reg_loss.detach() * len(labels)
            correct += (scores.detach().argmax(1) == labels).sum()
            reporter.step(epoch, step, loss, len(labels), lr=current_lr(optimizer))
        data_loss_mean, reg_loss_mean = data_loss_sum.item() / n, reg_loss_sum.item() / n
        train_metrics = {
            "loss": data_loss_mean + reg_loss_mean, "data_loss": data_loss_mean, "reg_loss": reg_loss_mean,
            "acc": correct.item() / n,
        }
        val_metrics = evaluate(model, splits.val, loss_fn, eval_batch_size, watch=visuals.watch(epoch) if visuals else None)
        lr = current_lr(optimizer)
        schedule.after_epoch(val_metrics)
        reporter.end_epoch(epoch, step, {
            "train/loss": train_metrics["loss"], "train/data_loss": train_metrics["data_loss"],
            "train/reg_loss": train_metrics["reg_loss"], "train/acc": train_metrics["acc"],
            "val/loss": val_metrics["loss"], "val/acc": val_metrics["acc"], "lr": lr,
        })
        if visuals is not None:
            visuals.end_epoch(epoch, step, val_metrics)
    return FitResult(train_metrics, val_metrics, epochs, step)


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
