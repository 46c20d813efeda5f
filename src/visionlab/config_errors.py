"""The one line a refused config, override or option is said in: Hydra's and OmegaConf's messages span lines
(and hint at HYDRA_FULL_ERROR), and a misspelled key, group or option gets the closest name that exists."""

from __future__ import annotations

import re
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from visionlab.paths import config_dir
from visionlab.suggest import did_you_mean
from visionlab.training.resume import is_hydra_setting
from visionlab.trust import split_config_dirs

CONF_DIR = str(config_dir())


def one_line(exc: BaseException, args: list[str] = ()) -> str:
    """Hydra's and OmegaConf's messages span lines (and hint at HYDRA_FULL_ERROR): keep what matters.

    With vl-train's arguments, a misspelled key, group or option also gets the closest name that exists.
    """
    if isinstance(exc, OSError) and exc.filename:
        return f"cannot write {exc.filename} ({exc.strerror}): choose another folder, e.g. hydra.run.dir=/tmp/run"
    text = str(exc)
    if key := re.search(r"Could not override '([^']+)'", text):
        hint = did_you_mean(key[1], known_keys(args, key[1]), f"{{}}={given_value(args, key[1])}") if args else ""
        advice = hint or "check its spelling against conf/"
        return f"{key[1]} is not a key of the config: {advice} (to add a new key, write +{key[1]}=...)"
    if key := re.search(r"Could not delete from config. '([^']+)' does not exist", text):
        hint = did_you_mean(key[1], known_keys(args, key[1]), "~{}") if args else ""
        return f"~{key[1]}: {key[1]} is not a key of the config: {hint or 'check its spelling against conf/'}"
    if (missing := re.search(r"Could not find '([^']+)'", text)) and (
        group := re.search(r"Available options in '([^']+)'", text)
    ):
        # the group Hydra lists, not the path's folder: optimizer=cifar10_fast/adam is an option of optimizer
        option = missing[1].removeprefix(f"{group[1]}/")
        listed = text.split("Available options in", 1)[1].split("Config search path", 1)[0].splitlines()[1:]
        options = [o.strip() for o in listed if o.strip()]
        hint = did_you_mean(option, options, f"{group[1]}={{}}")
        choices = f"use one of {', '.join(options)}"
        advice = f"{hint} ({choices})" if hint else choices
        return f"{group[1]}={option} is not an option of conf/{group[1]}/: {advice}"
    text = re.sub(r",? ?set env var HYDRA_FULL_ERROR=1 to see chained exception\.?", "", text)
    lines = [line.strip() for line in text.splitlines() if line.strip() and "HYDRA_FULL_ERROR" not in line]
    return "; ".join(lines)


def given_value(args: list[str], key: str) -> str:
    """The value an override gave `key` (`trainer.epcohs=3` -> 3)."""
    return next((a.split("=", 1)[1] for a in args if "=" in a and a.split("=", 1)[0].lstrip("+~") == key), "...")


def known_keys(args: list[str], failed: str) -> list[str]:
    """Every group and every dotted key of the config that vl-train's other arguments compose (of the default
    config where they fail too): the names a misspelled one is compared with."""
    dirs = [CONF_DIR, *(str(Path(d).expanduser().resolve()) for d in split_config_dirs(args)[0])]
    name = next((args[i + 1] for i, arg in enumerate(args[:-1]) if arg in ("--config-name", "-cn")), "train")
    others = [
        a
        for a in args
        if "=" in a and not a.startswith("-") and not is_hydra_setting(a) and a.split("=", 1)[0].lstrip("+~") != failed
    ]
    searchpath = f"hydra.searchpath=[{','.join(f'file://{d}' for d in dirs[1:])}]"
    groups = [
        entry.name for folder in map(Path, dirs) if folder.is_dir() for entry in folder.iterdir() if entry.is_dir()
    ]
    for overrides in (others, []):
        GlobalHydra.instance().clear()
        try:
            with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
                composed = compose(config_name=name, overrides=[*overrides, searchpath])
        except Exception:  # another bad override, or an unknown config name: try the defaults
            continue
        return groups + dotted_keys(OmegaConf.to_container(composed, resolve=False))
    return groups


def dotted_keys(node: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in node.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += dotted_keys(value, f"{prefix}{key}.")
    return keys
