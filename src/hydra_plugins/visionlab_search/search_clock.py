"""Where a search is: before each batch of trials, one line with trial k of N, what it tries, and the time left.

Trials keep optuna's numbers (from 0: the report's `trial` column and the job's folder), followed by
the count: `trial 4 (5 of 20, about 6 min left in the search): optimizer.lr=0.0012 ...`.

The time left is the mean time of this launch's batches so far times the batches still to run
(pruned trials make it shorter than the first batches suggest; it is said once a batch has ended).
The launchers' own lines for each job (`Launching 1 jobs locally`, `#4 : ...`) say less and go.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from visionlab.reporting.sweep_report import short

# Said better by the lines here, the study's line and the report: the launchers' per-job lines, the released sweeper's
# study name, storage, sampler and best value, and optuna's own study lines (alembic's: visionlab/launch.py).
QUIETED = (
    "hydra._internal.core_plugins.basic_launcher",
    "hydra_plugins.hydra_joblib_launcher._core",
    "hydra_plugins.hydra_optuna_sweeper._impl",
    "optuna",
)


def quiet_other_lines() -> None:
    for name in QUIETED:
        logging.getLogger(name).setLevel(logging.WARNING)


class SearchClock:
    def __init__(self) -> None:
        self.batches: list[float] = []  # seconds each batch of this launch took
        self.started = 0.0

    def start(self, numbers: list[int], total: int, batch_size: int, tried: list[str]) -> str:
        """The line for the batch of trials `numbers` (0-based) of a study of `total`."""
        self.started = time.monotonic()
        first, last = numbers[0], numbers[-1]
        which = f"trial {first} ({first + 1}" if first == last else f"trials {first}-{last} ({first + 1}-{last + 1}"
        which += f" of {total}"
        if self.batches:
            batches_left = math.ceil((total - first) / max(batch_size, 1))
            which += f", about {duration(sum(self.batches) / len(self.batches) * batches_left)} left in the search"
        return f"{which}): {'; '.join(tried)}"

    def done(self) -> None:
        self.batches.append(time.monotonic() - self.started)


def tried(overrides: Any, searched: list[str]) -> str:
    """A job's searched values, as its overrides set them."""
    pairs = (override.split("=", 1) for override in overrides if "=" in override)
    return " ".join(f"{key}={short(value)}" for key, value in pairs if key in searched)


def duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(round(seconds), 1)} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 90 else f"{minutes // 60} h {minutes % 60:02d} min"
