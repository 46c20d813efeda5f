"""Optuna searches that survive being stopped: rerun the same command and the study carries on.

The `hparams_search` configs use Hydra's Optuna sweeper through `ResumableOptunaSweeper`. The
released sweeper runs `n_trials` more trials on every launch and numbers each launch's jobs
from 0. Here `n_trials` is the study's total, so a rerun with the same `study_name` and
`storage` runs only the trials still missing; its jobs are numbered after the trials already
in the study (job N is trial N, so a shared sweep directory is never overwritten); and the
trials a stopped launch left running are marked failed, since nothing will finish them. A rerun
therefore assumes the earlier launch is no longer running.

A rerun may go to another sweep folder. Each trial records its run directory in the study (the
user attribute `run_dir`), and the sweep folder gets the sweep's config (`multirun.yaml`, as
Hydra's basic sweeper writes it), which names the study: the sweep report then ranks every trial
of the study, wherever its folder is. A study that already has its `n_trials` runs nothing, says
so, and writes its results (`optimization_results.yaml`, the report) into the sweep folder.

Hydra takes sweepers only from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from visionlab.errors import UserError
from visionlab.reporting.study_trials import RUN_DIR, SQLITE

log = logging.getLogger("visionlab")


class ResumableOptunaSweeper(OptunaSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        storage = self.sweeper.storage
        if isinstance(storage, str) and storage.startswith(SQLITE):
            Path(storage[len(SQLITE):]).parent.mkdir(parents=True, exist_ok=True)  # sqlite makes the file, not its folder
        record_run_dirs(self.sweeper)

    def sweep(self, arguments: list[str]) -> Any:
        from optuna.trial import TrialState  # optuna takes 2 s to import: only sweeps pay for it

        search = self.sweeper
        sweep_dir = Path(search.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the launcher makes it only for a job: a complete study has none
        OmegaConf.save(search.config, sweep_dir / "multirun.yaml")  # names the study, for the sweep report
        study = existing_study(search.storage, search.study_name)
        if study is not None:
            stopped = [t.number for t in study.trials if t.state == TrialState.RUNNING]
            for number in stopped:
                study.tell(number, state=TrialState.FAIL)
            done = len(study.trials) - len(stopped)
            to_go = max(search.n_trials - done, 0)
            left = f" (left running by a stopped launch, now failed: {stopped})" if stopped else ""
            if to_go:
                log.info("study %s: %d trials done%s, %d to go", search.study_name, done, left, to_go)
            else:
                log.info("study %s is complete: %d trials done%s, none to go (hydra.sweeper.n_trials=%d is the study's total)",
                         search.study_name, done, left, search.n_trials)
                if not any(t.state == TrialState.COMPLETE for t in study.trials):
                    raise UserError(f"study {search.study_name} in {search.storage} has {done} trials and none completed: "
                                    f"raise hydra.sweeper.n_trials above {done}, or start a new study with hydra.sweeper.study_name=...")
            search.n_trials = to_go
            search.job_idx = len(study.trials)
            search.sampler.reseed_rng()  # a sampler seeded as before would repeat the first launch's random trials
        return search.sweep(arguments)


def record_run_dirs(search: Any) -> None:
    """Make the released sweeper tell each trial its job's run directory (user attribute `run_dir`).

    Its loop asks a batch of trials, turns them into overrides (`_configure_trials`), launches
    them, then tells the study their values; in between, the jobs' returns say where each ran.
    """
    configure, launch = search._configure_trials, search.launcher.launch
    batch: list[Any] = []

    def configure_trials(trials: list[Any], *args: Any) -> Any:
        batch[:] = trials
        return configure(trials, *args)

    def launch_and_record(job_overrides: Any, initial_job_idx: int) -> Any:
        returns = launch(job_overrides, initial_job_idx=initial_job_idx)
        for trial, ret in zip(batch, returns):
            if ret.hydra_cfg is not None:  # a launcher whose job never started has no config to tell
                trial.set_user_attr(RUN_DIR, ret.hydra_cfg.hydra.runtime.output_dir)
        return returns

    search._configure_trials, search.launcher.launch = configure_trials, launch_and_record


def existing_study(storage: Any, study_name: str | None) -> Any:
    """The optuna.Study under that name in that storage, or None."""
    if storage is None or study_name is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet: the sweeper creates it
        return None
