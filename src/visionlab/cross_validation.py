"""What k-fold cross-validation reports: each fold's val numbers, their mean and spread.

The folds' results fold into one `FitResult`, so a k-fold run writes the same metrics.json keys
as a holdout run (`val/acc` is the mean over folds: the objective a sweeper optimizes) plus the
`cv/...` keys. What a learner chooses on val (a kNN's k) it chooses over all folds together
(`Learner.summarize_choices`).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

from visionlab.training.early_stopping import EarlyStopping
from visionlab.training.learners import Learner
from visionlab.training.loop import FitResult
from visionlab.training.settings import TrainerSettings


def summarize_folds(folds: Sequence[FitResult], learner: Learner) -> FitResult:
    extra: dict = {}
    if (chosen := learner.summarize_choices(folds)) is not None:
        extra, val_acc = chosen
    else:
        val_acc = [fold.val["acc"] for fold in folds]
    val_loss = [fold.val["loss"] for fold in folds]
    extra |= {
        "cv/folds": len(folds),
        "cv/val_acc_mean": statistics.fmean(val_acc),
        "cv/val_acc_std": statistics.pstdev(val_acc),
    }
    for i, loss in enumerate(val_loss):
        extra[f"cv/fold_{i}/val_acc"] = val_acc[i]
        if loss is not None:
            extra[f"cv/fold_{i}/val_loss"] = loss
    return FitResult(
        train={key: mean_or_none(fold.train.get(key) for fold in folds) for key in folds[0].train},
        val={"acc": extra["cv/val_acc_mean"], "loss": mean_or_none(val_loss)},
        epochs=folds[0].epochs,
        steps=sum(fold.steps for fold in folds),
        extra=extra,
    )


def final_model_trainer(trainer: TrainerSettings, folds: Sequence[FitResult]) -> TrainerSettings:
    """With early stopping, the folds chose how long to train; the final model has no val split to stop
    on (its val/ is training images), so it trains their median best epoch, every epoch of it. Folds
    that did not train (a kNN memorizes) chose nothing."""
    best_epochs = [fold.extra.get("best_epoch") for fold in folds]
    if not trainer.early_stopping.enabled or None in best_epochs:
        return trainer
    epochs = max(round(statistics.median(best_epochs)), 1)
    return dataclasses.replace(trainer, epochs=epochs, early_stopping=EarlyStopping())


def mean_or_none(values) -> float | None:
    """The mean, or None when any fold lacks the number (a kNN has no loss)."""
    values = list(values)
    return None if any(v is None for v in values) else statistics.fmean(values)
