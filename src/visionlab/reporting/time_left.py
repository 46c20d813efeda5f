"""How long the epoch and the run have left, from the pace so far: for the progress bar and the log.

The run's pace is its seconds per training step since this session's first step, so once an
epoch has ended it counts the evaluation after each epoch too; the epoch's pace is this epoch's
own (the run's until its first step). A k-fold partition counts the partitions after it as
taking as long as itself. With early stopping the run may end sooner: what is said then is the
most it can take.
"""

from __future__ import annotations

import time


class TimeLeft:
    def __init__(self, epochs: int, later_partitions: int = 0, stops_early: bool = False):
        self.epochs, self.later, self.stops_early = epochs, later_partitions, stops_early
        self.started: float | None = None  # this session's first step
        self.steps = 0  # taken since then
        self.epoch, self.per_epoch, self.done = 1, 1, 0  # the epoch, its steps and those done
        self.epoch_started, self.epoch_steps = 0.0, 0

    def start_epoch(self, epoch: int, steps: int, done: int) -> None:
        self.epoch, self.per_epoch, self.done = epoch, steps, done
        self.epoch_started, self.epoch_steps = time.perf_counter(), 0
        if self.started is None:
            self.started = self.epoch_started

    def step(self) -> None:
        self.steps += 1
        self.epoch_steps += 1
        self.done += 1

    def epoch_left(self) -> float | None:
        """From this epoch's pace; at its start, from the run's."""
        if self.epoch_steps:
            return (time.perf_counter() - self.epoch_started) / self.epoch_steps * (self.per_epoch - self.done)
        if self.steps and self.started is not None:
            return (self.epoch_started - self.started) / self.steps * (self.per_epoch - self.done)
        return None

    def run_left(self) -> float | None:
        if not self.steps or self.started is None:
            return None
        pace = (time.perf_counter() - self.started) / self.steps
        epochs = (self.epochs - self.epoch) + self.later * self.epochs  # after this one
        steps = (self.per_epoch - self.done) + epochs * self.per_epoch
        return pace * steps

    def said(self) -> str:
        """`1:02 left in the run`, `at most 1:02 left in the run (early stopping)`, or '' before the first step."""
        left = self.run_left()
        if left is None:
            return ""
        if self.stops_early:
            return f"at most {clock(left)} left in the run (early stopping)"
        return f"{clock(left)} left in the run"

    def bar(self) -> str:
        """For the progress bar: the epoch's time left and the run's."""
        epoch, run = self.epoch_left(), self.run_left()
        if epoch is None or run is None:
            return ""
        return f"epoch {clock(epoch)} · run {'≤ ' * self.stops_early}{clock(run)} left"


def clock(seconds: float) -> str:
    """m:ss, or h:mm:ss from an hour."""
    whole = max(round(seconds), 0)
    hours, rest = divmod(whole, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
