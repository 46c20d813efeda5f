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

Pruning: `hydra.sweeper.pruner` (conf/hydra/sweeper/pruner/: `median`, `successive_halving`,
`none`) is Optuna's pruner. Each job is told the number of its trial (`hydra.sweeper.trial`, an
override the sweeper adds); the run reports its objective after every epoch through the study's
storage and asks the pruner (`visionlab.trial_pruning`), and a pruned run records its run
directory and marks its trial PRUNED itself, so the state survives the launcher: parallel joblib
processes, SLURM jobs, a launch killed afterwards. The sweeper reads the storage uncached (its
cache would keep showing its own trials as running) and tells no result for a trial the job
already finished.

Hydra takes sweepers only from the `hydra_plugins` package, hence this module's home.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, OmegaConf

from hydra_plugins.visionlab_search import study_settings
from hydra_plugins.visionlab_search.search_clock import SearchClock, quiet_other_lines, tried
from visionlab import patches
from visionlab.errors import UserError
from visionlab.reporting.study_trials import RUN_DIR, SQLITE
from visionlab.reporting.sweep_report import SweepReportCallback

log = logging.getLogger("visionlab")


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(self, *, pruner: Any, trial: int | None, **settings: Any) -> None:
        # The jobs build and consult the pruner (visionlab.trial_pruning); Hydra instantiated it here
        # only so that a bad pruner setting stops the sweep before its first trial.
        super().__init__(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        quiet_other_lines()
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        storage = self.sweeper.storage
        if isinstance(storage, str) and storage.startswith(SQLITE):
            # sqlite makes the file, not its folder
            Path(storage[len(SQLITE) :]).parent.mkdir(parents=True, exist_ok=True)
        follow_trials(self.sweeper)

    def sweep(self, arguments: list[str]) -> Any:
        import optuna  # slow to import: only sweeps pay for it
        from optuna.trial import TrialState

        search = self.sweeper
        if isinstance(search.storage, str):
            search.storage = UncachedStorage(search.storage)
        searched = patches.searched_parameters(search, arguments)
        study = existing_study(search.storage, search.study_name)
        if study is not None:
            try:  # before anything is written or told
                study_settings.check(study, search.storage, searched, search.config)
            except UserError:
                SweepReportCallback.refused = True  # the folder's report is the other search's
                raise
        sweep_dir = Path(search.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)  # the launcher makes it only for a job: a complete study has none
        OmegaConf.save(search.config, sweep_dir / "multirun.yaml")  # names the study, for the sweep report
        search.trials_in_all = search.n_trials
        if study is None:
            where = f" in {search.storage}" if search.storage is not None else ""
            log.info(
                "study %s: a new study of %d trial%s (hydra.sweeper.n_trials)%s",
                search.study_name,
                search.n_trials,
                "s" * (search.n_trials != 1),
                where,
            )
            if search.storage is not None and search.study_name is not None:
                study = optuna.create_study(
                    study_name=search.study_name, storage=search.storage, directions=patches.study_directions(search)
                )
                study_settings.store(study, searched, search.config)
        else:
            stopped = [t.number for t in study.trials if t.state == TrialState.RUNNING]
            for number in stopped:
                study.tell(number, state=TrialState.FAIL)
            done = len(study.trials) - len(stopped)
            to_go = max(search.n_trials - done, 0)
            left = f" (left running by a stopped launch, now failed: {stopped})" if stopped else ""
            if to_go:
                log.info("study %s: %d trials done%s, %d to go", search.study_name, done, left, to_go)
            else:
                log.info(
                    "study %s is complete: %d trials done%s, none to go (hydra.sweeper.n_trials=%d is the study's "
                    "total)",
                    search.study_name,
                    done,
                    left,
                    search.n_trials,
                )
                if not any(t.state == TrialState.COMPLETE for t in study.trials):
                    raise UserError(
                        f"study {search.study_name} in {search.storage} has {done} trials and none completed: "
                        f"raise hydra.sweeper.n_trials above {done}, or start a new study with "
                        "hydra.sweeper.study_name=..."
                    )
            search.n_trials = to_go
            search.job_idx = len(study.trials)
            search.sampler.reseed_rng()  # a sampler seeded as before would repeat the first launch's random trials
        return search.sweep(arguments)


def follow_trials(search: Any) -> None:
    """Make the released sweeper tell each job its trial, and each trial its job's run directory.

    Its loop asks a batch of trials, turns them into overrides (`_configure_trials`), launches
    them, then tells the study their values; in between, the jobs' returns say where each ran
    (user attribute `run_dir`). A trial its job pruned is finished already: it keeps what the job
    recorded, and the study's `tell` of the job's value leaves it alone.
    """
    launch = search.launcher.launch
    batch: list[Any] = []
    searched: list[str] = []
    clock = SearchClock()

    def configure_trials(trials: list[Any], space: dict[str, Any], *args: Any) -> Any:
        batch[:], searched[:] = trials, list(space)
        for trial in trials:
            check_enqueued_values(trial, space, search.storage)
        if trials:
            leave_finished_trials_alone(trials[0].study)
        overrides = configure(trials, space, *args)
        return [(*job, f"hydra.sweeper.trial={trial.number}") for job, trial in zip(overrides, trials)]

    def launch_and_record(job_overrides: Any, initial_job_idx: int) -> Any:
        total = getattr(search, "trials_in_all", search.n_trials)
        tries = [tried(overrides, searched) for overrides in job_overrides]
        log.info(clock.start([t.number for t in batch], total, search.n_jobs, tries))
        returns = launch(job_overrides, initial_job_idx=initial_job_idx)
        clock.done()
        for trial, ret in zip(batch, returns):
            if ret.hydra_cfg is not None and not finished(trial):  # a job that never started has no config to tell
                trial.set_user_attr(RUN_DIR, ret.hydra_cfg.hydra.runtime.output_dir)
        return returns

    configure = patches.replace_trial_configuration(search, configure_trials)
    search.launcher.launch = launch_and_record


def check_enqueued_values(trial: Any, space: dict[str, Any], storage: Any) -> None:
    """A trial enqueued in the study takes its values from the storage, a file that may be someone else's
    (docs/architecture.md, "What is trusted"): each must be one this search space can take."""
    for name, value in patches.enqueued_values(trial).items():
        distribution = space.get(name)
        if distribution is not None and not patches.distribution_holds(distribution, value):
            raise UserError(
                f"{storage}: study {trial.study.study_name}'s enqueued trial {trial.number} sets {name}={value!r}, "
                f"which this search's {name} ({distribution}) cannot take: start a new study with "
                "hydra.sweeper.study_name=... (or another storage)"
            )


def leave_finished_trials_alone(study: Any) -> None:
    """The study's `tell` (once per study), minus the tells of trials already finished: those its job pruned."""
    if "tell" in vars(study):  # done for this study already
        return
    tell = study.tell

    def tell_unless_finished(trial: Any, *args: Any, **kwargs: Any) -> None:
        if finished(trial):
            log.info("trial %d was pruned by its job", trial.number)
            return
        tell(trial, *args, **kwargs)

    study.tell = tell_unless_finished


def finished(trial: Any) -> bool:
    """Whether the trial is finished in the storage (the sweeper's storage is uncached: this is what the jobs wrote)."""
    return patches.stored_trial(trial).state.is_finished()


class UncachedStorage:
    """The study's RDBStorage, which optuna uses as it is: it wraps an RDBStorage (or a URL) in a cache.

    That cache trusts that only this process changes the trials it asked for; but here their jobs,
    in other processes, report each epoch and mark their trial pruned, and the sampler and the
    sweeper need to see that.
    """

    def __init__(self, url: str):
        from optuna.storages import RDBStorage

        self.url, self._storage = url, RDBStorage(url)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def __str__(self) -> str:
        return self.url


def existing_study(storage: Any, study_name: str | None) -> Any:
    """The optuna.Study under that name in that storage, or None."""
    if storage is None or study_name is None:
        return None
    import optuna

    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:  # no such study yet: the sweeper creates it
        return None
