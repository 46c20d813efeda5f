"""Optuna searches that survive being stopped: rerun the same command and the study carries on.

The `hparams_search` configs use Hydra's Optuna sweeper through `ResumableOptunaSweeper`. The
released sweeper runs `n_trials` more trials on every launch and numbers each launch's jobs
from 0. Here `n_trials` is the study's total, so a rerun with the same `study_name` and
`storage` runs only the trials still missing; its jobs are numbered after the trials already
in the study (job N is trial N, so a shared sweep directory is never overwritten); and the
trials a stopped launch left running are marked failed, since nothing will finish them. A rerun
therefore assumes the earlier launch is no longer running.

Hydra takes sweepers only from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig

log = logging.getLogger("visionlab")

SQLITE = "sqlite:///"


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        storage = self.sweeper.storage
        if isinstance(storage, str) and storage.startswith(SQLITE):
            Path(storage[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its folder

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState  # optuna takes 2 s to import: only sweeps pay for it

        search = self.sweeper
        study = existing_study(search.storage, search.study_name)
        if study is not None:
            stopped = [t.number for t in study.trials if t.state == TrialState.RUNNING]
            for number in stopped:
                study.tell(number, state=TrialState.FAIL)
            done = len(study.trials) - len(stopped)
            log.info("study %s: %d trials done%s, %d to go", search.study_name, done,
                     f" (left running by a stopped launch, now failed: {stopped})" if stopped else "",
                     max(search.n_trials - done, 0))
            search.n_trials = max(search.n_trials - done, 0)
            search.job_idx = len(study.trials)
            search.sampler.reseed_rng()  # a sampler seeded as before would repeat the first launch's random trials
        return search.sweep(arguments)


def existing_study(storage: Any, study_name: str | None) -> Any:
    """The optuna.Study under that name in that storage, or None."""
    if storage is None or study_name is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet: the sweeper creates it
        return None
