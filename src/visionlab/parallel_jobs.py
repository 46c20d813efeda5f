"""A sweep's jobs side by side (`hydra/launcher=joblib`): idle OpenMP threads sleep, and lines say whose they are.

The threads each job takes are its share of the cores (training/threads.py, docs/architecture.md,
"Sharing the CPU cores"); the jobs' worker processes load torch after the sweep starts, with the
environment the sweep's own process sets here.
"""

from __future__ import annotations

import os
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from visionlab import console, cores


def parallel_jobs(hydra: Any) -> int:
    """How many jobs of this multirun run at once: joblib's `n_jobs`, else 1."""
    launcher = hydra.get("launcher") or {}
    if "joblib" not in str(launcher.get("_target_", "")):
        return 1
    return cores.joblib_siblings(int(launcher.get("n_jobs") or -1), cores.allowed().cores)


class ParallelJobs(Callback):
    """Hydra callback (conf/train.yaml): parallel jobs' OpenMP threads sleep when idle (`OMP_WAIT_POLICY=PASSIVE`)
    rather than spin on cores the other jobs work on. A value the user set is kept."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if parallel_jobs(config.hydra) > 1:
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def label_parallel_job() -> None:
    """A job of a parallel sweep prefixes its terminal lines with `[job N]` (its train.log is its own:
    no label there)."""
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and parallel_jobs(hydra) > 1:
        console.job_label = f"[job {hydra.job.num}]"
