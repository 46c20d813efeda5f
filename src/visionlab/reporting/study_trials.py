"""The Optuna study behind a sweep folder, and its trials, for the sweep report.

A resumed study's trials can lie in several sweep folders (a rerun into a new `hydra.sweep.dir`),
so the report of one folder reads the trials from the study's storage. The sweep's config names
the study: the `multirun.yaml` that the resumable sweeper writes into its sweep folder, or, for a
folder from before that, a job's `.hydra/hydra.yaml`. The sweeper records each trial's run
directory as the trial's `run_dir` user attribute; a trial without one (a launch killed while it
ran, or a study from before that) is the job of the same number under the sweep folder, if one
there names the study. optuna, slow to import, is loaded only for a folder whose config names a
storage.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionlab.errors import UserError
from visionlab.trust import check_resolvers

log = logging.getLogger("visionlab")

RUN_DIR = "run_dir"  # the trial user attribute that holds its run directory (absolute)
SQLITE = "sqlite:///"
# libyaml's C loader where installed: faster than the pure-Python one
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# the parts of a sweep's config the report reads: the study's storage and name, the sweep folder they may name, and
# the folder the sweep was launched from (a relative sqlite path is relative to it)
READ_HYDRA = ("sweeper", "sweep", "runtime")
STATUS = {"COMPLETE": "completed", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running", "WAITING": "waiting"}


@dataclass(frozen=True)
class Study:
    storage: str
    name: str
    objective: str | None  # the sweep's `objective` (None: read from a job's hydra.yaml, which lacks it)


@dataclass
class Trial:
    number: int
    status: str  # as a run's metrics.json says it: completed, failed, ...
    value: float | None
    params: dict[str, str]  # as the sweeper wrote them into the job's overrides
    run_dir: Path | None  # None: not recorded


def sweep_study(root: Path) -> Study | None:
    """The study the sweep in `root` ran, if its config names a storage and a study; else None."""
    configs = [root / "multirun.yaml", *sorted(root.glob("*/.hydra/hydra.yaml"))[:1]]
    config = next((path for path in configs if path.is_file()), None)
    if config is None:
        return None
    try:
        raw = yaml.load(config.read_text(), Loader=YAML_LOADER) or {}
        sweeper = raw.get("hydra", {}).get("sweeper") or {}
        if not (sweeper.get("storage") and sweeper.get("study_name")):  # a grid sweep, or no storage: no study to read
            return None
        # a sweep folder from elsewhere: nothing is built from it, but what is read is resolved, so only that is
        # kept and checked (hydra.run.dir's ${new_folder:...} and the help's resolvers are never read here)
        hydra = {key: raw["hydra"][key] for key in READ_HYDRA if key in raw["hydra"]}
        read = {"hydra": hydra, "objective": raw.get("objective")}
        check_resolvers(read, config)
        cfg = OmegaConf.create(read)
        cfg.hydra.sweep.dir = str(root.resolve())  # `${now:...}` would be today's; this folder is the sweep's
        storage, name = cfg.hydra.sweeper.storage, cfg.hydra.sweeper.study_name
    except (OmegaConfBaseException, yaml.YAMLError, UserError) as exc:
        log.warning("sweep report: %s cannot be read (%s): reporting the runs under %s only", config, exc, root)
        return None
    storage, name = str(storage), str(name)
    if storage.startswith(SQLITE):
        path = Path(storage[len(SQLITE) :])
        if not path.is_absolute():  # relative to where the sweep was launched
            path = Path(cfg.hydra.runtime.cwd) / path
        if not path.is_file():  # opening it would make an empty one
            log.warning(
                "sweep report: study %s's storage %s is not there: reporting the runs under %s only", name, path, root
            )
            return None
        storage = f"{SQLITE}{path}"
    return Study(storage, name, cfg.get("objective"))


def trials_of(study: Study) -> list[Trial]:
    """Every trial of the study, in number order ([] if the storage has no such study)."""
    import optuna

    try:
        frozen = optuna.load_study(study_name=study.name, storage=study.storage).get_trials(deepcopy=False)
    except KeyError:
        log.warning(
            "sweep report: %s holds no study %s: reporting the runs under the folder only", study.storage, study.name
        )
        return []
    return [
        Trial(
            t.number,
            STATUS[t.state.name],
            t.value,
            {key: str(value) for key, value in t.params.items()},
            Path(t.user_attrs[RUN_DIR]) if RUN_DIR in t.user_attrs else None,
        )
        for t in frozen
    ]


def job_of(run_dir: Path) -> tuple[Any, Any]:
    """The study name and job number that a sweep job's `.hydra/hydra.yaml` records (None where it has none)."""
    path = run_dir / ".hydra" / "hydra.yaml"
    try:
        hydra = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}) if path.is_file() else {}
    except yaml.YAMLError:
        return None, None
    return (hydra.get("sweeper") or {}).get("study_name"), (hydra.get("job") or {}).get("num")
