"""Fans every number out to TensorBoard, the log and the progress bar under one tag.

Tags are the contract of ARCHITECTURE.md: the same tag means the same thing for every model
and dataset. All scalars use the optimizer step as their x axis, so train and val curves line up.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from torch.utils.tensorboard import SummaryWriter

from visionlab.reporting.console import console, live_progress_enabled

log = logging.getLogger("visionlab")


class Reporter:
    def __init__(self, run_dir: Path, epochs: int, log_every_n_steps: int):
        self.writer = SummaryWriter(log_dir=str(run_dir))
        self.epochs = epochs
        self.every = max(int(log_every_n_steps), 1)
        self.progress: Progress | None = None
        self.task = None
        self._mark = (time.perf_counter(), 0)  # (time, images) at the last step line

    def start_epoch(self, epoch: int, steps: int) -> None:
        if live_progress_enabled():
            if self.progress is None:
                self.progress = Progress(
                    TextColumn("[bold]epoch {task.fields[epoch]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]}"), TimeElapsedColumn(),
                    console=console, transient=True,
                )
                self.progress.start()
            self.task = self.progress.add_task("", total=steps, epoch=f"{epoch}/{self.epochs}", loss="…", speed="")
        self._mark = (time.perf_counter(), 0)
        self._images = 0

    def step(self, epoch: int, step: int, loss: torch.Tensor, batch_images: int, lr: float | None = None) -> None:
        """Cheap on every step; the loss is read from the device only every N steps.

        `lr` goes to TensorBoard at the same steps, so per-batch schedules show as curves, not stairs.
        """
        self._images += batch_images
        if self.progress is not None:
            self.progress.advance(self.task)
        if step % self.every:
            return
        value = loss.item()
        self.writer.add_scalar("train/loss", value, step)
        if lr is not None:
            self.writer.add_scalar("lr", lr, step)
        now = time.perf_counter()
        speed = (self._images - self._mark[1]) / max(now - self._mark[0], 1e-9)
        self._mark = (now, self._images)
        if self.progress is not None:
            self.progress.update(self.task, loss=f"{value:.4f}", speed=f"{speed:,.0f} img/s")
        log.info("epoch %d step %d loss %.4f %.0f img/s", epoch, step, value, speed, extra={"progress": True})

    def end_epoch(self, epoch: int, step: int, scalars: dict[str, float | None]) -> None:
        if self.progress is not None:
            self.progress.remove_task(self.task)
        self.scalars(scalars, step)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in scalars.items() if v is not None)
        log.info("epoch %d/%d (step %d)  %s", epoch, self.epochs, step, shown)

    def scalars(self, scalars: dict[str, float | None], step: int) -> None:
        for tag, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def finish(self, metrics: dict[str, Any], run_dir: Path) -> None:
        table = Table(title="final metrics", show_header=False, box=None, pad_edge=False)
        for key, value in metrics.items():
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
        console.print(table)
        log.info("final metrics: %s", metrics, extra={"file_only": True})
        log.info("run directory: %s", run_dir)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        self.writer.close()
