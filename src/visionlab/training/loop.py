"""The training loop: one readable pass per epoch, evaluation under inference_mode.

Per step it does the gather, augmentation, forward (data loss + R(W)), backward, optional
clipping and optimizer step, and nothing else: running sums stay on the device and are read
once per epoch, so a GPU never waits on the host.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from visionlab.data import DeviceSplit, Splits
from visionlab.errors import RunStopped
from visionlab.optimization import current_lr
from visionlab.training import distributed
from visionlab.training.callbacks import Callback, EndTraining, Watch
from visionlab.training.settings import TrainerSettings
from visionlab.training.state import Position, TrainingState

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

log = logging.getLogger("visionlab")


@dataclass
class FitResult:
    train: dict[str, float | None]
    val: dict[str, float | None]
    epochs: int
    steps: int
    extra: dict[str, Any] = field(default_factory=dict)  # more metrics.json entries, e.g. a kNN's choice of k


def usable_size(n: int, batch_size: int, *, drop_last: bool = False, ranks: int = 1) -> int:
    """The images an epoch trains on. A trailing batch too small to train on is always dropped: one image
    (BatchNorm cannot train on it and it adds only noise), or fewer than `ranks` processes, each of which takes a
    share (distributed.shard). With `drop_last` (trainer.drop_last) every partial batch is: each step then
    averages as many images, as airbench's steps do; fewer images than one batch still make one step."""
    left = n % batch_size
    if drop_last and n > batch_size:
        return n - left
    return n - left if batch_size > 1 and 0 < left < max(2, ranks) else n


def steps_per_epoch(n: int, batch_size: int, *, drop_last: bool = False, ranks: int = 1) -> int:
    return -(-usable_size(n, batch_size, drop_last=drop_last, ranks=ranks) // batch_size)


@dataclass
class Objective:
    """What a step minimizes: the data loss of the scores, plus the regularization penalty R(W)."""

    loss_fn: LossFn
    penalty: Callable[[], torch.Tensor]


def fit(
    state: TrainingState,
    splits: Splits,
    augment: Callable[..., torch.Tensor],  # (images, their index in the train split, epoch) -> images
    objective: Objective,
    settings: TrainerSettings,
    callbacks: Sequence[Callback] = (),
) -> FitResult:
    """Minimize data loss + R(W) over the train split, from wherever `state` is; augment touches training batches only.

    A `state` restored from a checkpoint carries on at the very next step, so the run ends
    exactly as an uninterrupted one would. `state.precision` may run the forward pass in 16 bits;
    R(W) stays in float32. On several processes (training/distributed.py) each step trains on this rank's share
    of the batch through `state.replicas`; the callbacks see the whole batch's loss, and the epoch's sums are
    added over the ranks before they are read. After each step one collective agrees both that loss and the stop
    request a callback holds (`Callback.stop`, into its `agreed`, which SaveAndStop acts on), so every rank stops at
    the same step; on one process nothing is exchanged. The val split is evaluated in parts, one per rank
    (`evaluate`).
    """
    model, optimizer, precision = state.model, state.optimizer, state.precision
    trained = state.replicas or model  # the forward pass whose backward averages the ranks' gradients
    train = splits.train
    params = [p for p in model.parameters() if p.requires_grad]
    device = train.labels.device
    batch_size = settings.images_per_step(len(train))
    ranks = distributed.world_size()
    n = usable_size(len(train), batch_size, drop_last=settings.drop_last, ranks=ranks)
    steps = steps_per_epoch(len(train), batch_size, drop_last=settings.drop_last, ranks=ranks)
    stop = next((callback.stop for callback in callbacks if callback.stop is not None), None)
    try:
        while state.at.epoch <= settings.epochs:
            at = state.at
            model.train()
            if at.batch == 0:
                at.order = torch.randperm(len(train), generator=state.order_rng)[:n].to(device)
                at.sums = [
                    torch.zeros((), device=device),
                    torch.zeros((), device=device),
                    torch.zeros((), device=device, dtype=torch.long),
                ]
            data_loss_sum, reg_loss_sum, correct = at.sums  # updated in place, so a checkpoint sees them
            for callback in callbacks:
                callback.start_epoch(state, steps)
            for batch in at.order.split(batch_size)[at.batch :]:
                index, weight = distributed.shard(batch)
                images, labels = train.batch(index)
                images = augment(images, index, at.epoch)
                with precision.autocast():
                    scores = trained(images)
                    data_loss = objective.loss_fn(scores, labels)
                reg_loss = objective.penalty()
                loss = data_loss * weight + reg_loss
                optimizer.zero_grad(set_to_none=True)
                precision.backward(loss)
                if settings.grad_clip is not None:
                    precision.unscale(optimizer)
                    nn.utils.clip_grad_norm_(params, settings.grad_clip)
                precision.step(optimizer)
                state.schedule.after_step()
                at.step += 1
                at.batch += 1
                data_loss_sum += data_loss.detach() * len(labels)
                reg_loss_sum += reg_loss.detach() * len(labels)
                correct += (scores.detach().argmax(1) == labels).sum()
                whole, agreed = distributed.agreed_step(loss.detach(), stop.signum if stop is not None else None)
                if stop is not None:
                    stop.agreed = agreed
                for callback in callbacks:
                    callback.after_step(state, whole, len(batch))
            state.check_finite()
            data_loss_sum, reg_loss_sum, correct = map(distributed.total, at.sums)
            data_loss_mean, reg_loss_mean = data_loss_sum.item() / n, reg_loss_sum.item() / n
            state.done["train"] = {
                "loss": data_loss_mean + reg_loss_mean,
                "data_loss": data_loss_mean,
                "reg_loss": reg_loss_mean,
                "acc": correct.item() / n,
            }
            watches = [w for w in (callback.watch(at.epoch) for callback in callbacks) if w is not None]
            # one course for every rank: the same numbers, added over the ranks' parts
            state.done["val"] = val = evaluate(
                model, splits.val, objective.loss_fn, settings.eval_batch_size, watch=all_of(watches)
            )
            state.schedule.after_epoch(val)
            metrics = {
                "train/loss": state.done["train"]["loss"],
                "train/data_loss": state.done["train"]["data_loss"],
                "train/reg_loss": state.done["train"]["reg_loss"],
                "train/acc": state.done["train"]["acc"],
                "val/loss": val["loss"],
                "val/acc": val["acc"],
                "lr": current_lr(optimizer),
            }
            state.history[at.epoch] = metrics
            state.at = Position(epoch=at.epoch + 1, step=at.step)
            for callback in callbacks:
                callback.after_epoch(state, at.epoch, metrics, val)
    except EndTraining as ended:
        return FitResult(state.done["train"], state.done["val"], state.at.epoch - 1, state.at.step, ended.extra)
    except RunStopped as stopped:
        stopped.result = FitResult(state.done["train"], state.done["val"], state.at.epoch - 1, state.at.step)
        raise
    return FitResult(state.done["train"], state.done["val"], settings.epochs, state.at.step)


class AllOf:
    """One watcher that shows each batch to every one of `watches`; it sees a part if each of them does."""

    def __init__(self, watches: Sequence[Watch]):
        self.watches = list(watches)

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        for watch in self.watches:
            watch(scores, labels)

    def start_at(self, first: int) -> None:
        for watch in self.watches:
            watch.start_at(first)

    def gather(self) -> None:
        for watch in self.watches:
            watch.gather()


def all_of(watches: Sequence[Watch]) -> Watch | None:
    """One watcher that shows each batch to every one of `watches`."""
    if len(watches) <= 1:
        return watches[0] if watches else None
    return AllOf(watches)


def sees_a_part(watch: Watch | None) -> bool:
    """Whether `watch` can watch one rank's part of an evaluation (callbacks.Watch): it has `start_at(first)`, told
    the split index of the first image it will see, and `gather()`, a collective after the pass from which every
    rank's watch holds what it would have kept from the whole split. A watch without them sees the whole split."""
    if watch is None:
        return True
    if isinstance(watch, AllOf):
        return all(sees_a_part(each) for each in watch.watches)
    return callable(getattr(watch, "start_at", None)) and callable(getattr(watch, "gather", None))


def evaluate(
    model: nn.Module,
    split: DeviceSplit,
    loss_fn: LossFn | None,
    batch_size: int,
    watch: Watch | None = None,
) -> dict[str, Any]:
    """Accuracy and mean loss over a whole split; loss is None for models a loss does not apply to.

    Also "confusion": a CPU tensor [C, C] counting images of true class t predicted as p at [t, p],
    one bincount per batch on the device. `watch(scores, labels)`, if given, sees every batch in order.

    On several processes (every rank calls it: the val pass, the test pass) each rank scores its own consecutive
    part of the split (distributed.part), with rank 0's buffers (distributed.same_buffers), and the loss sum and
    the confusion matrix are added over the ranks in one collective: every rank returns the whole split's metrics,
    those of rank 0's model, up to the order of float additions. A watch that cannot see a part (`sees_a_part`: a
    picture of one's own with a plain function), or a split of fewer images than ranks, has every rank score the
    whole split instead, as one process does, and take rank 0's numbers.
    """
    ranks = distributed.world_size()
    shared = ranks > 1 and len(split) >= ranks and sees_a_part(watch)
    start, stop = distributed.part(len(split)) if shared else (0, len(split))
    if shared:
        distributed.same_buffers(model)
        if watch is not None:
            watch.start_at(start)
    loss_sum, confusion = _sums(model, split, loss_fn, batch_size, watch, start, stop)
    if shared:
        summed = distributed.total(torch.cat([loss_sum.double().view(1), confusion.double()]))  # counts stay exact
        loss_sum, confusion = summed[0], summed[1:].round().long()
        if watch is not None:
            watch.gather()
    n = len(split)
    classes = math.isqrt(confusion.numel())
    confusion = confusion.view(classes, classes).cpu()
    result = {
        "acc": confusion.trace().item() / n,
        "loss": loss_sum.item() / n if loss_fn is not None else None,
        "confusion": confusion,
    }
    return result if shared else distributed.from_main(result)  # one process: itself


@torch.inference_mode()
def _sums(
    model: nn.Module,
    split: DeviceSplit,
    loss_fn: LossFn | None,
    batch_size: int,
    watch: Watch | None,
    start: int,
    stop: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss sum and the flat confusion counts [C * C] of the images `start:stop` of `split`, on the device."""
    model.eval()
    device = split.labels.device
    loss_sum = torch.zeros((), device=device)
    confusion = torch.zeros((), device=device, dtype=torch.long)  # broadcasts to C*C counts at the first batch
    for images, labels in split.in_order(batch_size, start, stop):
        scores = model(images)
        if loss_fn is not None:
            loss_sum += loss_fn(scores, labels) * len(labels)
        classes = scores.shape[1]
        confusion = confusion + torch.bincount(labels * classes + scores.argmax(1), minlength=classes * classes)
        if watch is not None:
            watch(scores, labels)
    return loss_sum, confusion
