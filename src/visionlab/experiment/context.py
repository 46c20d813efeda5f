"""One run, as every partition of it sees it: decided once at the start, never changed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from visionlab.checkpoint_format import Checkpoint
from visionlab.training.signals import StopRequest
from visionlab.training.threads import SharedThreads


@dataclass(frozen=True)
class RunContext:
    """Where the run writes, what it runs on, when it started, how it is asked to stop, and what it carries on
    from (docs/architecture.md, "Run directory" and "Checkpoints")."""

    folder: Path
    device: torch.device
    started: float  # time.perf_counter() at the start, less the time a resumed run had trained before
    stop: StopRequest
    threads: SharedThreads  # the run's share of the CPU cores, looked at again as training goes
    provenance: dict[str, Any]  # this session's record (provenance.py), for every checkpoint
    resume: Checkpoint | None = None  # the stopped run's checkpoint; None for a new run

    def resumes(self, partition: int) -> Checkpoint | None:
        """The checkpoint `partition` carries on from: the stopped run's, if it stopped in that partition."""
        if self.resume is not None and self.resume.place.partition == partition:
            return self.resume
        return None
