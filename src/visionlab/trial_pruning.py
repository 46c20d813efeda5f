"""A pruned Optuna search, the job's side: report the objective after every epoch, stop when the pruner says so.

The resumable sweeper (hydra_plugins/visionlab_search) tells each job the number of its trial in
`hydra.sweeper.trial`, beside the study's `storage`, `study_name` and `pruner`. The job loads the
study from that storage, so a job in another process (joblib, SLURM) or of a resumed study reports
to the same trial. Pruned, the job records its run directory in the trial and marks it PRUNED
itself: the sweeper then leaves the trial as it is.

Anything else (a single run, a grid sweep, `pruner: none`) gets a `TrialPruning` that does nothing
and never imports optuna (slow to import).
"""

from __future__ import annotations

import logging
from typing import Any

from omegaconf import DictConfig

from visionlab import patches
from visionlab.errors import Pruned
from visionlab.reporting.study_trials import RUN_DIR
from visionlab.training import distributed
from visionlab.training.callbacks import Callback
from visionlab.training.state import TrainingState

log = logging.getLogger("visionlab")

NO_PRUNER = "optuna.pruners.NopPruner"  # conf/hydra/sweeper/pruner/none.yaml


class TrialPruning:
    def __init__(
        self,
        storage: str | None = None,
        study_name: str | None = None,
        trial: int | None = None,
        pruner: DictConfig | None = None,
        run_dir: str | None = None,
    ):
        self.active = (
            all(v is not None for v in (storage, study_name, trial, pruner)) and pruner.get("_target_") != NO_PRUNER
        )
        self.storage, self.study_name, self.number, self.pruner, self.run_dir = (
            storage,
            study_name,
            trial,
            pruner,
            run_dir,
        )
        self.trial: Any = None  # the optuna.trial.Trial, loaded at the first report

    @classmethod
    def from_config(cls, hydra: DictConfig | None = None) -> TrialPruning:
        """For the job whose Hydra config this is (default: the running job's, `HydraConfig.get()`)."""
        if hydra is None:
            from hydra.core.hydra_config import HydraConfig

            if not HydraConfig.initialized():  # a run outside Hydra: no sweep
                return cls()
            hydra = HydraConfig.get()
        sweeper = hydra.get("sweeper") or {}
        if "trial" not in sweeper:  # not the resumable Optuna sweeper
            return cls()
        return cls(sweeper.storage, sweeper.study_name, sweeper.trial, sweeper.pruner, hydra.runtime.output_dir)

    def after_epoch(self, epoch: int, objective: float, may_prune: bool = True) -> bool:
        """Report the objective after `epoch` (the step); True: the pruner says stop now,
        and the trial is marked pruned. `may_prune` false (the run's last epoch): reported only.

        A step reported before (a resumed run repeating an epoch) is not reported again; the pruner is asked anyway.
        A trial finished already (marked failed by a later launch while this job was away) takes no reports.
        """
        if not self.active:
            return False
        if self.trial is None:
            self.trial = self._load_trial()
        reported = patches.stored_trial(self.trial)
        if reported.state.is_finished():
            return False
        if epoch not in reported.intermediate_values:
            self.trial.report(objective, step=epoch)
        if not may_prune or not self.trial.should_prune():
            return False
        from optuna.trial import TrialState

        self.trial.set_user_attr(RUN_DIR, self.run_dir)
        self.trial.study.tell(self.number, state=TrialState.PRUNED)
        log.info(
            "pruned by %s after epoch %d: trial %d of study %s stops here",
            type(self.trial.study.pruner).__name__,
            epoch,
            self.number,
            self.study_name,
        )
        return True

    def _load_trial(self) -> Any:
        import optuna
        from hydra.utils import instantiate

        study = optuna.load_study(study_name=self.study_name, storage=self.storage, pruner=instantiate(self.pruner))
        return patches.optuna_trial(study, self.number)


class ReportToTrial(Callback):
    """After each epoch, the objective to the trial; pruned, the run ends with `Pruned` (status pruned, exit 0).

    In a k-fold run each fold's epochs follow the previous fold's (step = fold * epochs + epoch),
    so the pruner compares a trial's fold 2 with the other trials' fold 2.
    """

    def __init__(self, pruning: TrialPruning, objective: str, first_step: int, last_epoch: int | None = None):
        self.pruning = pruning
        self.objective = objective
        self.first_step = first_step
        self.last_epoch = last_epoch  # the run's last (its test follows): reported, never pruned, nothing left to save

    def after_epoch(self, state: TrainingState, epoch: int, metrics: dict, val: dict) -> None:
        """On several processes rank 0 alone reports to the trial, and its answer is every rank's."""
        pruned = distributed.is_main() and self.pruning.after_epoch(
            self.first_step + epoch, metrics[self.objective], epoch != self.last_epoch
        )
        if distributed.from_main(pruned):
            raise Pruned(epoch)
