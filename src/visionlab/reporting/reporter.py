"""Fans every number out to TensorBoard, the log and the progress bar under one tag.

The one place that writes TensorBoard event files: scalars here, and the pictures, histograms
and graph that `reporting/pictures/` makes.

A write that finds the disk full (TensorBoard's writer thread reports it at the next call) stops
the run with errors.DiskFull.

Tags are the contract of docs/architecture.md, "TensorBoard tags": the same tag means the same thing for every model
and dataset. All scalars use the optimizer step as their x axis, so train and val curves line up.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Column
from torch import nn
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries

from visionlab import patches, terminal
from visionlab.console import console, live_progress_enabled, plain_text
from visionlab.errors import writing
from visionlab.reporting.hparams import HPARAM_METRICS
from visionlab.reporting.summary import RunSummary, command_line
from visionlab.reporting.time_left import TimeLeft, clock

log = logging.getLogger("visionlab")


EVENTS = "TensorBoard's files"


def _events(method):
    """The method writes to TensorBoard's files in `self.folder`: no space there stops the run."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with writing(self.folder, EVENTS):
            return method(self, *args, **kwargs)

    return wrapper


BAR_EVERY_S = 0.5  # how often the bar's time left is worked out again


# The bar's line, by what it needs: the bar at least BAR_AT_LEAST wide, and what fits of the optional
# columns (the loss, the last val/acc, the speed: widths as drawn), dropped from the last on a narrow terminal.
BAR_AT_LEAST, FIXED = 10, 50  # FIXED: the epoch, the steps, the time left, and the spaces between columns
OPTIONAL = (("loss {task.fields[loss]}", 12), ("{task.fields[val]}", 15), ("{task.fields[speed]}", 13))


def bar_columns(width: int) -> list:
    """One row whatever the terminal's width: the bar takes what the columns leave, the optional ones what fits."""
    one_row = Column(no_wrap=True)
    room = width - FIXED - BAR_AT_LEAST
    shown = []
    for text, needs in OPTIONAL:
        if room < needs:
            break
        shown.append(TextColumn(text, table_column=one_row))
        room -= needs
    return [
        TextColumn("[bold]epoch {task.fields[epoch]}", table_column=one_row),
        BarColumn(bar_width=None),
        MofNCompleteColumn(table_column=one_row),
        *shown,
        TextColumn("{task.fields[left]}", table_column=one_row),
    ]


class Reporter:
    def __init__(
        self,
        run_dir: Path,
        epochs: int,
        log_every_n_steps: int,
        resumed_at_step: int | None = None,
        later_partitions: int = 0,
        stops_early: bool = False,
    ):
        # A resumed run drops whatever the killed one logged after its checkpoint: no step twice.
        purge_step = None if resumed_at_step is None else resumed_at_step + 1
        self.folder = run_dir
        with writing(run_dir, EVENTS):
            self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)
        self.epochs = epochs
        self.every = max(int(log_every_n_steps), 1)
        self.progress: Progress | None = None
        self.task = None
        self._mark = (time.perf_counter(), 0)  # (time, images) at the last step line
        self.val_acc: dict[int, float] = {}  # after each epoch, for the summary's best epoch
        self.left = TimeLeft(epochs, later_partitions, stops_early)
        self._bar_at = 0.0  # when the bar's time left was last worked out
        self._lrs: tuple[float, float] | None = None  # the lowest and highest lr of the epoch's steps, for its line
        self.image_tags: dict[str, None] = {}  # written so far, in order, for the summary

    def start_epoch(self, epoch: int, steps: int, done: int = 0) -> None:
        if live_progress_enabled():
            if self.progress is None:
                # in Jupyter each redraw is a message to the browser: fewer of them
                redraws = 2 if console.is_jupyter else 10
                self.progress = Progress(
                    *bar_columns(console.width),
                    console=console,
                    transient=True,
                    expand=True,
                    refresh_per_second=redraws,
                )
                self.progress.start()
            last_val = self.val_acc.get(epoch - 1)
            self.task = self.progress.add_task(
                "",
                total=steps,
                completed=done,
                epoch=f"{epoch}/{self.epochs}",
                loss="…",
                speed="",
                val="" if last_val is None else f"val/acc {last_val:.4f}",
                left=self.left.bar(),
            )
        self.left.start_epoch(epoch, steps, done)
        self._mark = (time.perf_counter(), 0)
        self._images = 0
        self._lrs = None

    @_events
    def step(
        self, epoch: int, step: int, loss: torch.Tensor, batch_images: int, lr: float | None = None
    ) -> float | None:
        """Cheap on every step; the loss is read from the device only every N steps, and returned then.

        `lr` goes to TensorBoard at the same steps, so per-batch schedules show as curves, not stairs.
        """
        self._images += batch_images
        self.left.step()
        if lr is not None:
            self._lrs = (min(self._lrs[0], lr), max(self._lrs[1], lr)) if self._lrs else (lr, lr)
        if terminal.notices:
            self.note_terminal(epoch, step)
        if self.progress is not None:
            self.progress.advance(self.task)
            if (now := time.perf_counter()) - self._bar_at >= BAR_EVERY_S:
                self._bar_at = now
                self.progress.update(self.task, left=self.left.bar())
        if step % self.every:
            return None
        value = loss.item()
        self.writer.add_scalar("train/batch_loss", value, step)
        if lr is not None:
            self.writer.add_scalar("lr", lr, step)
        now = time.perf_counter()
        speed = (self._images - self._mark[1]) / max(now - self._mark[0], 1e-9)
        self._mark = (now, self._images)
        if self.progress is not None:
            self.progress.update(self.task, loss=f"{value:.4f}", speed=f"{speed:,.0f} img/s")
        shown_lr = "" if lr is None else f" lr {lr:.3g}"
        epoch_left = self.left.epoch_left()
        shown_left = "" if epoch_left is None else f", epoch {clock(epoch_left)} left"
        log.info(
            "epoch %d step %d loss %.4f%s %.0f img/s%s",
            epoch,
            step,
            value,
            shown_lr,
            speed,
            shown_left,
            extra={"progress": True},
        )
        return value

    def note_terminal(self, epoch: int, step: int) -> None:
        """Say in train.log when the terminal went away; the bar stops, since nobody sees it."""
        for notice in terminal.take_notices():
            log.warning(
                "%s at epoch %d, step %d: the run carries on, logging to train.log",
                notice,
                epoch,
                step,
                extra={"file_only": True},
            )
        if self.progress is not None and not live_progress_enabled():
            self.progress.stop()
            self.progress = None

    @_events
    def end_epoch(self, epoch: int, step: int, scalars: dict[str, float | None]) -> None:
        if self.progress is not None:
            self.progress.remove_task(self.task)
        if terminal.notices:
            self.note_terminal(epoch, step)
        # lr went to TensorBoard with the step's batch loss if this step was a logged one: not twice
        self.scalars({k: v for k, v in scalars.items() if not (k == "lr" and step % self.every == 0)}, step)
        if scalars.get("val/acc") is not None:
            self.val_acc[epoch] = scalars["val/acc"]
        shown = "  ".join(self.shown(k, v) for k, v in scalars.items() if v is not None)
        left = self.left.said() if epoch < self.epochs or self.left.later else ""
        log.info("epoch %d/%d (step %d)  %s%s", epoch, self.epochs, step, shown, f"; {left}" if left else "")

    def shown(self, tag: str, value: float) -> str:
        """A scalar on the epoch's line; the lr as the range its steps went over (a schedule that restarts each epoch
        ends where it began, and its value at the end alone reads as if it never moved)."""
        if tag == "lr" and self._lrs is not None and f"{self._lrs[0]:.3g}" != f"{self._lrs[1]:.3g}":
            return f"lr {self._lrs[0]:.3g}-{self._lrs[1]:.3g}"
        return f"{tag} {value:.4g}"

    @_events
    def scalars(self, scalars: dict[str, float | None], step: int) -> None:
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    @_events
    def image(self, tag: str, image: torch.Tensor, step: int) -> None:
        """A uint8 RGB picture `[3, H, W]`; its tag goes into the run summary."""
        self.writer.add_image(tag, image, step)
        self.image_tags[tag] = None

    @_events
    def embedding(self, features: Any, split: Any, classes: list[str], step: int) -> None:
        """The Projector tab's points: `features` is an embeddings.Penultimate that saw the test pass."""
        features.write(self.writer, split, classes, step)

    @_events
    def histogram(self, tag: str, values: torch.Tensor, step: int) -> None:
        self.writer.add_histogram(tag, values.detach().cpu(), step)

    @_events
    def graph(self, model: nn.Module, example: torch.Tensor) -> None:
        """The model traced on `example` for the Graphs tab; raises if it does not trace.

        torch prints the reason a trace failed to stdout before raising it; the caller logs it instead.
        The trace skips its self-check (patches.unchecked_trace).
        """
        with contextlib.redirect_stdout(io.StringIO()), patches.unchecked_trace():
            self.writer.add_graph(model, example)

    @_events
    def hparams(self, hparams: dict[str, bool | int | float | str], metrics: dict[str, Any]) -> None:
        """The run's row in TensorBoard's HParams tab: its hyperparameters and final metrics.

        Written to this run's own event file, where the tab reads each metric from the scalar of
        the same tag (`add_hparams` would make a stray sub-run). Only metrics the run has are listed.
        """
        shown = {tag: value for tag, value in metrics.items() if tag in HPARAM_METRICS and value is not None}
        for summary in hparams_summaries(hparams, shown):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], run_dir: Path, layers: str = "") -> None:
        """The run summary: printed, and written to `summary.md` in the run directory (with the model's layer table)."""
        if terminal.notices:
            self.note_terminal(metrics["epochs"], metrics["steps"])
        summary = RunSummary(command_line(), metrics, self.val_acc, list(self.image_tags), run_dir, layers)
        console.print(summary.rich(), soft_wrap=True)  # long lines unbroken, so the command copies whole
        # the log has what the terminal had
        log.info("run summary\n%s", plain_text(summary.rich()), extra={"file_only": True})
        with writing(run_dir, "summary.md"):
            (run_dir / "summary.md").write_text(summary.markdown())
        log.info("run directory: %s", run_dir)

    @_events
    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.writer.close()
