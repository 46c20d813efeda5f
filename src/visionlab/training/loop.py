"""The training loop: one readable pass per epoch, evaluation under inference_mode.

Per step it does the gather, forward, backward and optimizer step and nothing else: running
sums stay on the device and are read once per epoch, so a GPU never waits on the host.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from visionlab.data import DeviceSplit, Splits
from visionlab.optimization import Schedule, current_lr
from visionlab.reporting.reporter import Reporter

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class FitResult:
    train: dict[str, float | None]
    val: dict[str, float | None]
    epochs: int
    steps: int


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
    epochs: int,
    batch_size: int,
    eval_batch_size: int,
    seed: int,
) -> FitResult:
    train = splits.train
    device = train.labels.device
    order_rng = torch.Generator().manual_seed(seed)
    n = usable_size(len(train), batch_size)
    steps = steps_per_epoch(len(train), batch_size)
    step = 0
    train_metrics: dict[str, float] = {}
    val_metrics: dict[str, float | None] = {}
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        reporter.start_epoch(epoch, steps)
        order = torch.randperm(len(train), generator=order_rng)[:n].to(device)
        for index in order.split(batch_size):
            images, labels = train.batch(index)
            scores = model(images)
            loss = loss_fn(scores, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.after_step()
            step += 1
            loss_sum += loss.detach() * len(labels)
            correct += (scores.detach().argmax(1) == labels).sum()
            reporter.step(epoch, step, loss, len(labels))
        train_metrics = {"loss": loss_sum.item() / n, "acc": correct.item() / n}
        val_metrics = evaluate(model, splits.val, loss_fn, eval_batch_size)
        lr = current_lr(optimizer)
        schedule.after_epoch(val_metrics)
        reporter.end_epoch(epoch, step, {
            "train/loss": train_metrics["loss"], "train/acc": train_metrics["acc"],
            "val/loss": val_metrics["loss"], "val/acc": val_metrics["acc"], "lr": lr,
        })
    return FitResult(train_metrics, val_metrics, epochs, step)


def memorize(model: nn.Module, splits: Splits, reporter: Reporter, *, eval_batch_size: int) -> FitResult:
    """"Training" for a model with no parameters (kNN): it stores the train split, then is scored on val."""
    model.fit(splits.train)
    val_metrics = evaluate(model, splits.val, None, eval_batch_size)
    reporter.end_epoch(1, 0, {"val/acc": val_metrics["acc"]})
    return FitResult({"loss": None, "acc": None}, val_metrics, epochs=0, steps=0)


@torch.inference_mode()
def evaluate(model: nn.Module, split: DeviceSplit, loss_fn: LossFn | None, batch_size: int) -> dict[str, float | None]:
    """Accuracy and mean loss over a whole split; loss is None for models a loss does not apply to."""
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    for images, labels in split.in_order(batch_size):
        scores = model(images)
        if loss_fn is not None:
            loss_sum += loss_fn(scores, labels) * len(labels)
        correct += (scores.argmax(1) == labels).sum()
    n = len(split)
    return {"acc": correct.item() / n, "loss": loss_sum.item() / n if loss_fn is not None else None}
