"""What watches fit() at its fixed points: after each step and after each epoch's val pass.

fit() itself only trains; reporting, pictures, checkpoints and the stop request are callbacks, so
every partition of a run (the holdout, each fold, the final model) gets all of them (reporting's,
Progress and Pictures, are in reporting/callbacks.py). A hook that
raises `RunStopped` ends the run at that point, with the state as it is; one that raises
`EndTraining` ends training early but well (fit returns, and the run goes on to test).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from visionlab.errors import Interrupted
from visionlab.training import distributed
from visionlab.training.checkpoint import Checkpoints
from visionlab.training.lookahead import Lookahead
from visionlab.training.signals import StopRequest
from visionlab.training.state import TrainingState

# Sees every (scores, labels) batch of an evaluation; on several processes, one that also has `start_at` and `gather`
# sees only its rank's part of the split (loop.sees_a_part), one without them has every rank score the whole split.
Watch = Callable[[torch.Tensor, torch.Tensor], None]


class EndTraining(Exception):
    """Training is done before its last epoch (early stopping): fit() returns what it has,
    with `extra` for metrics.json."""

    def __init__(self, extra: dict[str, Any]):
        super().__init__("training ended early")
        self.extra = extra


class Callback:
    """Each hook may do nothing; fit() calls them in the order the callbacks are given."""

    # The run's stop request, held by a callback that acts on it: fit() agrees it with the other ranks after each
    # step, in the collective that gives the step's loss, into `stop.agreed` (the callbacks' hooks read that).
    stop: StopRequest | None = None

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        pass

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        pass

    def watch(self, epoch: int) -> Watch | None:
        """Something to show the coming val evaluation's batches to, or None."""
        return None

    def after_epoch(
        self, state: TrainingState, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]
    ) -> None:
        pass


class TellEpoch(Callback):
    """Tells a model that declares `start_epoch(epoch)` (airbench's whitening bias) which epoch starts. The epoch
    is the training position's, so a resumed run's model is told the same as an uninterrupted one's."""

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        state.model.start_epoch(state.at.epoch)


class SaveAndStop(Callback):
    """last.pt (and best.pt) after every epoch and every N steps, and at once when a stop is requested.

    A stop request (SIGINT, SIGTERM, SIGUSR2) ends training at the next step boundary, after
    saving, with `Interrupted`; nothing is saved once the loss has turned nan or inf. On several processes the
    request is the one fit() agreed after the step, in the collective that gives the step's loss (`stop.agreed`: a
    signal that reached any rank stops them all at the same step); on one process, this process's own.
    """

    def __init__(self, checkpoints: Checkpoints, every_steps: int | None, stop: StopRequest):
        self.checkpoints = checkpoints
        self.every_steps = every_steps
        self.stop = stop

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        signum = self.stop.agreed if distributed.world_size() > 1 else self.stop.signum
        if signum or (self.every_steps and state.at.step % self.every_steps == 0):
            state.check_finite()
            self.checkpoints.save(state.state_dict())
            if signum:
                raise Interrupted(signum)

    def after_epoch(
        self, state: TrainingState, epoch: int, metrics: dict[str, float | None], val: dict[str, Any]
    ) -> None:
        self.checkpoints.save(state.state_dict(), metrics)
        if signum := distributed.agreed(self.stop.signum):
            raise Interrupted(signum)


class StopOnRequest(Callback):
    """A stop request ends training at the next step boundary, without saving (a run that keeps no checkpoints)."""

    def __init__(self, stop: StopRequest):
        self.stop = stop

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        if self.stop:
            raise Interrupted(self.stop.signum)


class AverageWeights(Callback):
    """trainer.ema: every N steps the weights move toward their running average (training/lookahead.py).

    After the last step they become the average, so the last val pass, last.pt and the test all
    see the weights that are kept.
    """

    def __init__(self, lookahead: Lookahead):
        self.lookahead = lookahead

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        self.lookahead.after_step(state.at.step)
        if state.at.step == self.lookahead.total_steps:
            self.lookahead.finish()
