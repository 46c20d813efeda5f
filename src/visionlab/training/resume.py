"""`resume=PATH` and `resume=auto`: carry a stopped run on in its own directory, with its own config.

Hydra picks the run directory before any of our code runs, so `vl-train` rewrites its arguments
first (`resume_arguments`): the stopped run's overrides, `hydra.run.dir` set to its directory, and
`resume=` naming the checkpoint; a run that cannot carry on (completed, diverged) is refused there,
before Hydra writes into its folder. Then `experiment.run` loads that checkpoint (`load_resume_state`).
In a multirun, `resume=auto` makes each job carry on from a last.pt already in its own directory,
which is what a requeued SLURM job finds. The checkpoint and the overrides are files that may come
from someone else: both pass trust.py before Hydra or anything else reads them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from visionlab.checkpoint_format import Checkpoint, load_checkpoint
from visionlab.errors import UserError
from visionlab.trust import Allowlist, check_overrides, check_stored, keep_writes_here, split_config_dirs

log = logging.getLogger("visionlab")

RUNS_ROOT = Path("outputs")  # where `resume=auto` looks for single runs (conf/train.yaml's hydra.run.dir)
OVERRIDES = Path(".hydra") / "overrides.yaml"
# How many processes train the run, on which machines: where it runs, not what it computes, so a resume may change it
# (the log says what that changes: training/state.py).
LAYOUT_KEYS = ("devices", "nodes", "node_rank", "rendezvous")
LAYOUT = tuple(f"trainer.{key}=" for key in LAYOUT_KEYS)
UNFINISHED = (None, "interrupted")  # metrics.json status of a run worth resuming (None: no metrics.json yet)


def resume_arguments(args: list[str]) -> list[str]:
    """Command-line overrides with `resume=PATH|auto` turned into the stopped run's own ones."""
    value = next((a.split("=", 1)[1] for a in args if a.startswith("resume=")), None)
    if value in (None, "null", ""):
        return args
    config_dirs, overrides = split_config_dirs(args)
    allowed = Allowlist.for_command(config_dirs, overrides)
    options = [f"--config-dir={folder}" for folder in config_dirs] + [a for a in overrides if a.startswith("-")]
    layout = [a for a in overrides if a.startswith(LAYOUT)]
    others = [a for a in overrides if not a.startswith(("resume=", "-", *LAYOUT)) and not is_hydra_setting(a)]
    hydra_args = [a for a in overrides if is_hydra_setting(a) and not a.startswith("hydra.run.dir=")]
    if "-m" in args or "--multirun" in args:
        if value != "auto":
            raise UserError(
                f"resume={value} resumes a single run: in a multirun use resume=auto (each job carries on from its "
                "own last.pt)"
            )
        return args
    if value == "auto":
        run_dir = latest_unfinished(RUNS_ROOT, others)
        if run_dir is None:
            return args  # a new run, which says so when it starts
        checkpoint = run_dir / "last.pt"
    else:
        if others:
            raise UserError(
                f"resume={value} carries on that run with its own config: drop the other arguments ({' '.join(others)})"
            )
        checkpoint = checkpoint_path(Path(value))
        run_dir = checkpoint.parent
    state = resumable_state(checkpoint, value)  # refused here, before Hydra makes .hydra/ and train.log beside it
    check_stored(state.config, checkpoint, allowed)
    return [
        *options,
        *[o for o in saved_overrides(run_dir, allowed) if not (layout and o.startswith(LAYOUT))],
        *layout,
        *hydra_args,
        f'resume="{checkpoint}"',
        f'hydra.run.dir="{run_dir}"',
    ]


def is_hydra_setting(arg: str) -> bool:
    """hydra.* and hydra/ overrides (also ~ and + ones) leave the run's config alone."""
    return arg.lstrip("~+").startswith(("hydra.", "hydra/"))


def checkpoint_path(path: Path) -> Path:
    """A run directory means its last.pt."""
    path = path.expanduser().resolve()
    if path.is_dir():
        path = path / "last.pt"
        if not path.is_file():
            raise UserError(
                f"{path.parent} has no last.pt: the run stopped before its first checkpoint, so start it again"
            )
    elif not path.is_file():
        raise UserError(f"resume={path} does not exist: give a run directory or its last.pt")
    return path


def resumable_state(path: Path, value: str) -> Checkpoint:
    """The checkpoint `resume=value` names, if a run can carry on from it; else the one line saying why not."""
    if run_status(path.parent) == "completed":
        raise UserError(
            f"resume={value}: that run already completed (see its metrics.json); start a new run to train more"
        )
    if run_status(path.parent) == "diverged":
        raise UserError(
            f"resume={value}: that run diverged, and would again from its last checkpoint; start a new run with a "
            "smaller optimizer.lr"
        )
    try:
        state = load_checkpoint(path)
    except UserError as exc:
        raise UserError(f"{exc}{best_instead(path)}") from None
    if state.position is None:
        raise UserError(f"{path} holds no training position (a kNN model memorizes in one go): start the run again")
    return state


def best_instead(last: Path) -> str:
    """`; .../best.pt loads: resume=.../best.pt carries on ...` when a broken last.pt has a good best.pt beside it."""
    best = last.with_name("best.pt")
    if last.name != "last.pt" or not best.is_file():
        return ""
    try:
        load_checkpoint(best)
    except UserError:
        return ""
    return f"; {best} loads: resume={best} carries on from the best epoch's checkpoint instead"


def saved_overrides(run_dir: Path, allowed: Allowlist) -> list[str]:
    """The stopped run's command-line overrides that set its config, checked (trust.py).

    Its `hydra.*` settings are not carried over: where logs go and what Hydra runs are this command's.
    """
    overrides = recorded_overrides(run_dir)
    check_overrides(overrides, run_dir / OVERRIDES, allowed)
    return overrides


def recorded_overrides(run_dir: Path) -> list[str]:
    """What `.hydra/overrides.yaml` says set the run's config, unchecked: only for comparing."""
    file = run_dir / OVERRIDES
    if not file.is_file():
        return []
    return [str(o) for o in OmegaConf.load(file) if not is_hydra_setting(str(o)) and not str(o).startswith("resume=")]


def run_status(run_dir: Path) -> str | None:
    try:
        return json.loads((run_dir / "metrics.json").read_text()).get("status")
    except (OSError, ValueError):
        return None


def latest_unfinished(root: Path, overrides: list[str]) -> Path | None:
    """The newest run under root with a last.pt, not completed, started with the same overrides."""
    wanted = sorted(overrides)
    candidates = [
        last.parent
        for last in root.glob("*/*/last.pt")
        if run_status(last.parent) in UNFINISHED and sorted(recorded_overrides(last.parent)) == wanted
    ]
    return max(candidates, key=lambda d: (d / "last.pt").stat().st_mtime, default=None)


def load_resume_state(cfg: DictConfig, run_dir: Path) -> Checkpoint | None:
    """The checkpoint this run carries on from, or None for a new run."""
    value = cfg.get("resume")
    if value is None:
        return None
    if value == "auto":
        path = run_dir / "last.pt"
        if not path.is_file() or run_status(run_dir) not in UNFINISHED:
            log.info("resume=auto: no unfinished run with these overrides to carry on, so this is a new run")
            return None
    else:
        path = checkpoint_path(Path(value))
    state = resumable_state(path, value)
    check_stored(state.config, path, Allowlist.for_command().including(cfg))  # cfg: composed from trusted sources
    log.info("resuming from %s: epoch %d, step %d", path, state.position["epoch"], state.position["step"])
    return state


def resume_config(state: Checkpoint, composed: DictConfig) -> DictConfig:
    """The config the stopped run had, whatever conf/ says today (with today's `resume`)."""
    stored = OmegaConf.create(keep_writes_here(state.config, composed))
    stored.resume = composed.resume
    layout = {key: composed.trainer[key] for key in LAYOUT_KEYS if key in composed.trainer}
    stored.trainer.update(layout)
    today = OmegaConf.to_container(composed, resolve=True)
    today["resume"] = None
    before = dict(state.config, resume=None, trainer={**state.config["trainer"], **layout})
    if today != before:
        log.warning("conf/ has changed since this run started: it carries on with the config stored in its checkpoint")
    return stored
