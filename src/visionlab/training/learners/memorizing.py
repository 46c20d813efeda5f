"""The learner that memorizes: a kNN stores the train split, then chooses its k on val (`KChoice`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visionlab.data import DeviceSplit
from visionlab.errors import Interrupted
from visionlab.training.learners.base import Lesson, Search
from visionlab.training.learners.knn_choice import KChoice
from visionlab.training.loop import FitResult, LossFn
from visionlab.training.settings import TrainerSettings

log = logging.getLogger("visionlab")


@dataclass(frozen=True)
class MemorizingLearner:
    eval_batch_size: int
    votes: bool = True

    def learn(self, lesson: Lesson) -> FitResult:
        """ "Training" for a model with no parameters (kNN): it stores the train split, then picks k on val.

        Such a model has `fit(train)`, a list of candidate `ks`, `scores_by_k(images)` (scores for every
        k from one neighbour search) and the `k` its forward() uses. Every k is scored on val, the best
        (ties: the smaller k) is kept for test: the accuracy for each k (KChoice), val/acc and best_k.
        """
        model, splits = lesson.model, lesson.splits
        log.info("%s has no trainable parameters: loss, optimizer and scheduler are not used", type(model).__name__)
        model.fit(splits.train)
        choice = KChoice(accuracy_by_k(model, splits.val, self.eval_batch_size))
        model.k = choice.best
        lesson.report({**choice.entries(), "val/acc": choice.accuracy[model.k]}, 0)
        log.info(
            "%s  best k %d (chosen on val)",
            "  ".join(f"{tag} {acc:.4f}" for tag, acc in choice.entries().items()),
            model.k,
        )
        result = FitResult(
            {"loss": None, "acc": None},
            {"loss": None, "acc": choice.accuracy[model.k]},
            epochs=0,
            steps=0,
            extra={**choice.entries(), "best_k": model.k},
        )
        lesson.checkpoints.save(
            {"model": model.state_dict(), "done": {"train": result.train, "val": result.val}},
            {"val/acc": result.val["acc"]},
        )
        if lesson.stop:
            raise Interrupted(lesson.stop.signum, result)
        return result

    def scoring_loss(self) -> LossFn | None:
        return None

    def test_checkpoint(self, trainer: TrainerSettings) -> str:
        return "last.pt"  # memorized once: last.pt is the only state there is

    def neighbours(self, model: nn.Module) -> Search | None:
        return model.neighbours

    def voters(self, model: nn.Module) -> int | None:
        return model.k if isinstance(model.k, int) else None  # a list of k until it has chosen on val

    def final_model_overrides(self, folds: Sequence[FitResult]) -> dict[str, Any]:
        return {"k": self.fold_choice(folds).best}

    def summarize_choices(self, folds: Sequence[FitResult]) -> tuple[dict[str, Any], list[float]]:
        each = self.choices(folds)
        choice = KChoice.mean(each)
        best = choice.best
        entries = {**choice.entries(), "best_k": best}
        # the ± band of accuracy against k (reporting/sweep_curve.py)
        entries |= {KChoice.fold_tag(i, k): fold.accuracy[k] for k in choice.accuracy for i, fold in enumerate(each)}
        return entries, [fold.accuracy[best] for fold in each]

    def fold_choice(self, folds: Sequence[FitResult]) -> KChoice:
        return KChoice.mean(self.choices(folds))

    @staticmethod
    def choices(folds: Sequence[FitResult]) -> list[KChoice]:
        return [KChoice.of(fold.extra) for fold in folds]


@torch.inference_mode()
def accuracy_by_k(model: nn.Module, split: DeviceSplit, batch_size: int) -> dict[int, float]:
    """Accuracy over a whole split for every k of a nearest-neighbour model, one search per batch."""
    model.eval()
    correct = {k: torch.zeros((), device=split.labels.device, dtype=torch.long) for k in model.ks}
    for images, labels in split.in_order(batch_size):
        for k, scores in model.scores_by_k(images).items():
            correct[k] += (scores.argmax(1) == labels).sum()
    return {k: count.item() / len(split) for k, count in correct.items()}
