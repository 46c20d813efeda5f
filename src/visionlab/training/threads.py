"""This run's torch threads, shared with the other visionlab runs on the same cores,
and kept shared as they come and go.

docs/architecture.md, "Sharing the CPU cores": the run enters the machine's registry of runs
(`run_registry`), takes its share (`cores.share`), and looks again at step boundaries, at most every
`LOOK_EVERY_S` seconds: a run that starts later makes the earlier ones give up threads within
that time, and a run that ends gives them back. Cores oversubscribed all the same (more runs than
cores, or trainer.threads set too high) are said once, in one line with the setting that helps.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from visionlab import cores, run_registry
from visionlab.parallel_jobs import parallel_jobs
from visionlab.run_registry import Entry
from visionlab.training.callbacks import Callback
from visionlab.training.state import TrainingState

log = logging.getLogger("visionlab")

LOOK_EVERY_S = 1.0  # reading the registry takes well under a millisecond for a few runs


class SharedThreads:
    def __init__(self, asked: int | None, run_dir: Path):
        self.asked = asked
        self.budget = cores.allowed()
        self.seat = run_registry.join(self.budget.cpus, asked, str(run_dir))
        self.me = self.seat.entry if self.seat else Entry(0, 0.0, self.budget.cpus, asked, str(run_dir))
        self.warned = False
        self.looked = 0.0
        self.siblings = sweep_siblings()
        self.share = self.take(self.siblings)

    def take(self, siblings: int = 1) -> cores.Share:
        """This run's share as the registry has it now, set as torch's threads."""
        self.looked = time.monotonic()
        others = run_registry.alive(exclude=self.seat) if self.seat else []
        share = cores.share(self.me, self.budget, others, siblings)
        if share.threads != torch.get_num_threads():
            torch.set_num_threads(share.threads)
        return share

    def say_start(self) -> None:
        """After the device line: who shares the cores, if anyone, or the oversubscription."""
        share = self.share
        if share.runs > 1 and not share.oversubscribed:
            log.info(
                "CPU cores: %s shared by %d visionlab runs%s: this run takes %d thread%s (more as the others end)",
                self.budget.why,
                share.runs,
                " (with this sweep's parallel jobs)" if self.siblings > 1 else "",
                share.threads,
                "s" * (share.threads != 1),
            )
        self.warn(share)

    def look(self) -> None:
        """Take the share again; say a change, and an oversubscription once."""
        before, self.share = self.share, self.take()
        if self.share.threads != before.threads:
            log.info(
                "CPU threads: %d -> %d (%d visionlab run%s on %s now)",
                before.threads,
                self.share.threads,
                self.share.runs,
                "s" * (self.share.runs != 1),
                self.budget.why,
            )
        self.warn(self.share)

    def warn(self, share: cores.Share) -> None:
        if share.oversubscribed and not self.warned:
            log.warning(share.warning(self.asked))
            self.warned = True

    def look_now_and_then(self) -> None:
        if time.monotonic() - self.looked >= LOOK_EVERY_S:
            self.look()

    def close(self) -> None:
        if self.seat is not None:
            self.seat.leave()


def sweep_siblings() -> int:
    """The jobs a parallel multirun runs beside this one (1 elsewhere): counted from the start, before they register."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return 1
    return parallel_jobs(HydraConfig.get())


class ShareCores(Callback):
    """fit()'s step boundaries are where the run looks at the registry again."""

    def __init__(self, threads: SharedThreads):
        self.threads = threads

    def start_epoch(self, state: TrainingState, steps: int) -> None:
        self.threads.look_now_and_then()

    def after_step(self, state: TrainingState, loss: torch.Tensor, images: int) -> None:
        self.threads.look_now_and_then()
