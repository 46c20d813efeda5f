"""A study is one experiment: the settings its trials share are stored in the study, and a search that reuses the
study (its name in its storage) with other settings is refused before any trial runs.

The settings are the search's composed config, resolved, minus what the search varies (its
parameters) and minus what changes how a run goes but not what it computes (`HOW_IT_RUNS`), plus
the option chosen in each config group. They are stored as the study's user attribute `settings`.
Only keys that both have are compared, so a visionlab that adds a config key can carry on an older
study; a study from before this attribute gets it from the first search that reuses it. Refused:
one line naming what differs and the new study to start instead (docs/sweeps.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from visionlab.errors import UserError

SETTINGS = "settings"  # the study's user attribute
HOW_IT_RUNS = (
    "trainer.threads",
    "trainer.device",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_steps",
    "trainer.on_hangup",
    "trainer.compile",
    "trainer.eval_batch_size",
    "logging",
    "resume",
    "summary_only",
    "lr_find",
    "lr_range",
    "dataset.download",
    "dataset.cache_dir",
    "features.cache_dir",
)
SHOWN = 3  # differences named in full in the refusal; the rest by key


def settings_of(config: DictConfig, searched: set[str]) -> dict[str, str]:
    """What a trial of this search computes with, beside its searched parameters: {key: value as JSON}."""
    choices = {
        group: option
        for group, option in config.hydra.runtime.choices.items()
        if not group.startswith("hydra") and option is not None
    }
    job = OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)
    leaves = {key: json.dumps(value, sort_keys=True) for key, value in flatten(job)}
    kept = {**{group: json.dumps(option) for group, option in choices.items()}, **leaves}
    return {key: value for key, value in kept.items() if not under(key, searched) and not under(key, HOW_IT_RUNS)}


def flatten(node: Any, prefix: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [pair for key, value in node.items() for pair in flatten(value, f"{prefix}{key}.")]
    return [(prefix[:-1], node)]


def under(key: str, names: Any) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in names)


def check(study: Any, storage: Any, searched: set[str], config: DictConfig) -> None:
    """Refuse to reuse `study` with other settings (UserError: one line, exit 2); store them where it has none."""
    here = settings_of(config, searched)
    there = study.user_attrs.get(SETTINGS)
    if there is None:
        study.set_user_attr(SETTINGS, here)
        return
    groups = {key for key in here if "." not in key and key in there and here[key] != there[key]}
    differ = [key for key in here if key in there and here[key] != there[key] and not under(key, groups - {key})]
    if not differ:
        return
    shown = ", ".join(f"{key}={plain(there[key])} there, {plain(here[key])} here" for key in differ[:SHOWN])
    more = f" (and {', '.join(differ[SHOWN:])})" if differ[SHOWN:] else ""
    raise UserError(
        f"study {study.study_name} in {storage} was searched with other settings: {shown}{more}; its trials "
        f"cannot be compared with this search's. Start a new study: hydra.sweeper.study_name="
        f"{new_name(study.study_name, differ, here)} (or search with the study's settings)"
    )


def store(study: Any, searched: set[str], config: DictConfig) -> None:
    """A new study records its settings with its first trials."""
    if SETTINGS not in study.user_attrs:
        study.set_user_attr(SETTINGS, settings_of(config, searched))


def plain(value: str) -> str:
    loaded = json.loads(value)
    return "null" if loaded is None else loaded if isinstance(loaded, str) else json.dumps(loaded)


def new_name(name: str, differ: list[str], here: dict[str, str]) -> str:
    """The study's name with this search's differing values (the first two), e.g. mlp_optuna_synthetic."""
    tail = "_".join(re.sub(r"[^A-Za-z0-9.]+", "-", str(plain(here[key]))).strip("-") for key in differ[:2])
    return f"{name}_{tail}"
