"""`trainer.early_stopping`: end training once the objective has stopped improving.

Patience counts finished epochs since the last improvement by more than `min_delta`, read from
the training state's per-epoch history, so a resumed run keeps its count; no run ends before `min_steps`
optimizer steps (training/epoch_budget.py), however flat its first epochs. The best epoch is the
one best.pt holds (the first with the best objective); `trainer.test_on=best` tests its weights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import torch

from visionlab.checkpoint_format import load_checkpoint
from visionlab.checks import Maybe, Number, Whole
from visionlab.objective import better
from visionlab.training.callbacks import Callback, EndTraining
from visionlab.training.state import TrainingState

log = logging.getLogger("visionlab")


@dataclass
class EarlyStopping:
    patience: Annotated[int | None, Maybe(Whole(1, unit="epochs"))] = None  # null: train every epoch
    min_delta: Annotated[float, Number(ge=0, example=0.001)] = 0.0
    # no stop before this many optimizer steps (epochs=auto: at least its budget's min_steps)
    min_steps: Annotated[int, Whole(0, unit="optimizer steps")] = 0

    @property
    def enabled(self) -> bool:
        return self.patience is not None


def best_epoch(history: dict[int, dict[str, Any]], objective: str) -> int | None:
    """The first epoch with the best objective: the weights best.pt holds."""
    best = None
    for epoch in sorted(history):
        value = history[epoch].get(objective)
        if value is not None and (best is None or better(value, history[best][objective], objective)):
            best = epoch
    return best


def epochs_without_improvement(history: dict[int, dict[str, Any]], objective: str, min_delta: float) -> int:
    reference, since = None, 0
    for epoch in sorted(history):
        value = history[epoch].get(objective)
        if value is None:
            continue
        if reference is None or better(value, reference, objective, min_delta):
            reference, since = value, 0
        else:
            since += 1
    return since


class StopEarly(Callback):
    def __init__(self, rule: EarlyStopping, objective: str):
        self.rule = rule
        self.objective = objective

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        self._check(state)  # a resumed run whose patience had already run out

    def after_epoch(self, state: TrainingState, epoch: int, metrics: dict, val: dict) -> None:
        self._check(state)

    def _check(self, state: TrainingState) -> None:
        if state.at.step < self.rule.min_steps:
            return
        stale = epochs_without_improvement(state.history, self.objective, self.rule.min_delta)
        if stale >= self.rule.patience:
            best = best_epoch(state.history, self.objective)
            log.info(
                "early stopping after epoch %d: %s has not improved by more than %g for %d epoch%s (best: epoch %d, "
                "%.4g)",
                max(state.history),
                self.objective,
                self.rule.min_delta,
                stale,
                "s" * (stale != 1),
                best,
                state.history[best][self.objective],
            )
            raise EndTraining({"stopped_early": True, "best_epoch": best})


def restore_best(
    model: torch.nn.Module, history: dict[int, dict[str, Any]], objective: str, best_file: Path
) -> int | None:
    """Put best.pt's weights into `model` and return their epoch (None, and the last weights kept,
    if there is no best.pt)."""
    if not history or not best_file.is_file():
        return None
    model.load_state_dict(load_checkpoint(best_file).model)
    return best_epoch(history, objective)
