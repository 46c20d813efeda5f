"""The learner that trains by gradient: fit() with the run's loss, R(W), optimizer and schedule."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from visionlab.data import Splits
from visionlab.optimization import Schedule
from visionlab.rejections import first_use
from visionlab.training import distributed
from visionlab.training.callbacks import AverageWeights, Callback, SaveAndStop, TellEpoch
from visionlab.training.early_stopping import StopEarly, best_epoch, restore_best
from visionlab.training.learners.base import Lesson, Search
from visionlab.training.lookahead import Lookahead
from visionlab.training.loop import FitResult, LossFn, Objective, fit, steps_per_epoch
from visionlab.training.precision import Precision
from visionlab.training.settings import TrainerSettings
from visionlab.training.speed import prepare_model
from visionlab.training.state import TrainingState

log = logging.getLogger("visionlab")


@dataclass(frozen=True)
class GradientLearner:
    loss_fn: LossFn
    penalty: Callable  # (parameters) -> R(W)
    optimizer: Callable  # (parameters) -> optimizer
    schedule: Callable[..., Schedule]  # (optimizer, epochs=, steps_per_epoch=) -> schedule
    augment: Callable[..., torch.Tensor]  # (images, index, epoch) -> images: data/augment.py
    seed: int
    objective: str
    votes: bool = False

    def training_state(
        self,
        model: nn.Module,
        splits: Splits,
        trainer: TrainerSettings,
        schedule: Callable[..., Schedule] | None = None,
    ) -> TrainingState:
        """The model made ready (first use checked, fitted to clean training images, memory layout, compile) and
        everything fit() moves forward; `schedule` replaces the run's (the range test's rising lr)."""
        first_use(model, self.loss_fn, splits)
        device = splits.train.labels.device
        if hasattr(model, "fit_inputs"):  # a model with layers fitted to the data, not by gradient: its first n images
            model.fit_inputs(lambda n: splits.train.batch(torch.arange(min(n, len(splits.train)), device=device))[0])
        prepare_model(model, channels_last=trainer.channels_last, compile=trainer.compile)
        replicas = distributed.replicated(model, trainer.sync_batchnorm)
        optimizer = self.optimizer(model.parameters())
        images = trainer.images_per_step(len(splits.train))
        steps = steps_per_epoch(len(splits.train), images, drop_last=trainer.drop_last, ranks=distributed.world_size())
        lookahead = Lookahead(model, total_steps=trainer.epochs * steps, every=trainer.ema) if trainer.ema else None
        return TrainingState(
            model,
            optimizer,
            (schedule or self.schedule)(optimizer, epochs=trainer.epochs, steps_per_epoch=steps),
            Precision(trainer.precision, device),
            torch.Generator().manual_seed(self.seed),
            lookahead=lookahead,
            replicas=replicas,
        )

    def objective_of(self, model: nn.Module) -> Objective:
        return Objective(self.loss_fn, self.penalty(model.parameters()))

    def learn(self, lesson: Lesson) -> FitResult:
        """fit() with every callback; the weights that will be tested are best.pt's if trainer.test_on says so."""
        model, checkpoints, trainer = lesson.model, lesson.checkpoints, lesson.trainer
        state = self.training_state(model, lesson.splits, trainer)
        if lesson.resume is not None:
            state.load_state_dict(lesson.resume.learned())
        callbacks: list[Callback] = [
            *lesson.watchers,
            SaveAndStop(checkpoints, trainer.checkpoint_every_steps, lesson.stop),
            *lesson.judges,
        ]
        if hasattr(model, "start_epoch"):
            callbacks.insert(0, TellEpoch())  # before the first step of each epoch, which it may change
        if state.lookahead is not None:
            callbacks.insert(0, AverageWeights(state.lookahead))  # before anything saves or reports the weights
        if trainer.early_stopping.enabled:
            patience = trainer.early_stopping.patience
            log.info(
                "early stopping: up to %d epochs, ending once %s has not improved by more than %g for %d epoch%s "
                "(trainer.early_stopping.patience=null trains every epoch)",
                trainer.epochs,
                self.objective,
                trainer.early_stopping.min_delta,
                patience,
                "s" * (patience != 1),
            )
            callbacks.append(StopEarly(trainer.early_stopping, self.objective))
        result = fit(state, lesson.splits, self.augment, self.objective_of(model), trainer, callbacks)
        if trainer.early_stopping.enabled:
            result.extra = {
                "stopped_early": False,
                "best_epoch": best_epoch(state.history, self.objective),
                **result.extra,
            }
        if (
            lesson.will_test
            and trainer.tests_best()
            and (tested := restore_best(model, state.history, self.objective, checkpoints.best)) is not None
        ):
            log.info(
                "test_on=best: the weights of epoch %d (best.pt) take the test; metrics.json's train/ and val/ are "
                "that epoch's",
                tested,
            )
            epoch = state.history[tested]
            result.train = {key: epoch[f"train/{key}"] for key in ("loss", "data_loss", "reg_loss", "acc")}
            result.val = {"loss": epoch["val/loss"], "acc": epoch["val/acc"]}
            result.extra["tested_epoch"] = tested
        return result

    def scoring_loss(self) -> LossFn | None:
        return self.loss_fn

    def test_checkpoint(self, trainer: TrainerSettings) -> str:
        return "best.pt" if trainer.tests_best() else "last.pt"

    def neighbours(self, model: nn.Module) -> Search | None:
        return None

    def voters(self, model: nn.Module) -> int | None:
        return None

    def final_model_overrides(self, folds: Sequence[FitResult]) -> dict[str, Any]:
        return {}

    def summarize_choices(self, folds: Sequence[FitResult]) -> tuple[dict[str, Any], list[float]] | None:
        return None
