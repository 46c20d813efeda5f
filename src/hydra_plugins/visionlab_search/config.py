"""`hydra/sweeper=resumable_optuna`: the released Optuna sweeper's settings, plus a pruner and each job's trial.

No `from __future__ import annotations` here: Hydra imports plugin modules in a way that leaves
string annotations unresolvable for dataclasses.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from omegaconf import MISSING


@dataclass
class ResumableOptunaSweeperConf(OptunaSweeperConf):
    _target_: str = "hydra_plugins.visionlab_search.resumable_optuna_sweeper.ResumableOptunaSweeper"
    defaults: list[Any] = field(default_factory=lambda: [{"sampler": "tpe"}, {"pruner": "none"}])
    # An optuna.pruners class (_target_ and its arguments): conf/hydra/sweeper/pruner/.
    pruner: Any = MISSING
    # Set by the sweeper in each job's config: the number of the job's trial in the study.
    trial: int | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="resumable_optuna", node=ResumableOptunaSweeperConf, provider="visionlab"
)
