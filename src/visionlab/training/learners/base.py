"""What a learner is: how a model learns from a partition's train split, resumes, is scored and pictured.

The run asks its learner, never the model: which loss scores it, which file takes the test,
whether its scores are vote shares, whether it can show the neighbours behind an answer. Which
learner a model has is declared by the model's class (`memorizes`), read once (`learner_for`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from visionlab.checkpoint_format import Checkpoint
from visionlab.data import Splits
from visionlab.training.callbacks import Callback
from visionlab.training.checkpoint import Checkpoints
from visionlab.training.loop import FitResult, LossFn
from visionlab.training.settings import TrainerSettings
from visionlab.training.signals import StopRequest

Search = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor]]  # (queries, k) -> (distances, indices)
ReportScalars = Callable[[dict[str, float | None], int], None]  # (tag -> value, step): TensorBoard and the log


@dataclass(frozen=True)
class Lesson:
    """One partition's training, as its learner receives it."""

    model: nn.Module
    splits: Splits
    trainer: TrainerSettings  # the run's, or the final model's (cross_validation.final_model_trainer)
    checkpoints: Checkpoints
    stop: StopRequest
    resume: Checkpoint | None  # the stopped run's checkpoint, when this partition carries on from it
    will_test: bool  # this partition takes the run's test once it has learned
    watchers: Sequence[Callback]  # progress and pictures: see every step and epoch before anything is saved
    judges: Sequence[Callback]  # e.g. a search's pruner: hear of each epoch once it is saved
    report: ReportScalars


class Learner(Protocol):
    """How one kind of model learns; `experiment` runs every partition through one of these."""

    votes: bool  # its scores are vote shares already (no softmax), so a picture's "confidence" is a vote

    def learn(self, lesson: Lesson) -> FitResult: ...

    def scoring_loss(self) -> LossFn | None:
        """The loss its test and vl-eval report beside accuracy; None where a loss does not apply."""

    def test_checkpoint(self, trainer: TrainerSettings) -> str:
        """Which of a partition's files holds the weights that take the test (docs/architecture.md, "Checkpoints")."""

    def neighbours(self, model: nn.Module) -> Search | None:
        """Its search over the memorized train split, for pictures and vl-predict; None if it has none."""

    def voters(self, model: nn.Module) -> int | None:
        """How many neighbours vote (a kNN's chosen k); None for a model that does not vote."""

    def final_model_overrides(self, folds: Sequence[FitResult]) -> dict[str, Any]:
        """What the final model of a k-fold run takes from its folds' choices (a kNN: their k)."""

    def summarize_choices(self, folds: Sequence[FitResult]) -> tuple[dict[str, Any], list[float]] | None:
        """metrics.json entries for what the folds chose together, and each fold's val/acc under that choice;
        None when it chooses nothing on val."""
