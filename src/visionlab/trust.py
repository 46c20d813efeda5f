"""What a file from elsewhere may make this installation do (docs/architecture.md, "What is trusted").

A config read back from a file (a checkpoint's, a run folder's `.hydra/overrides.yaml`, a sweep's
`multirun.yaml`) may come from someone else. Built as it is, it could name any `_target_` (Hydra
imports and calls it), read the environment through a resolver, or point a cache or a download
at any folder. So before anything in it is imported, resolved or built, `check_stored` holds it
against an allowlist made from what is installed, not a list of dangerous names:

- the `_target_`s that the shipped conf/ names (and once named: `RETIRED_TARGETS`), and the torch classes
  `checks.EXTERNAL` describes;
- what the user brings on this command line: the YAML files of `--config-dir`, and `_target_=`
  overrides typed there (a class of one's own, e.g. docs/examples/my_configs).

`keep_writes_here` then gives every argument a component declares with `checks.WritesOutside`
(a cache folder, a download switch) this command's value, or its "off" value: a file never
decides where this installation writes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf

from visionlab.checks import EXTERNAL, writes_outside
from visionlab.errors import UserError
from visionlab.paths import config_dir

# Resolvers a stored config may call: ones that read nothing but the config and the clock.
# `oc.env` (the environment), `oc.decode` and any resolver registered later are refused.
SAFE_RESOLVERS = frozenset({"now", "hydra", "oc.select", "oc.dict.keys", "oc.dict.values"})
RESOLVER_CALL = re.compile(r"\$\{\s*([^${}:\s]+)\s*:")
TARGET = "_target_"
CONFIG_DIR_OPTIONS = ("--config-dir", "-cd")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Allowlist:
    """The `_target_`s a config read from a file may name for this command."""

    targets: frozenset[str]

    @classmethod
    def for_command(cls, config_dirs: Iterable[str | Path] = (), overrides: Iterable[str] = ()) -> Allowlist:
        """What is installed, plus what this command line brings:
        its `--config-dir`s and typed `_target_=` overrides."""
        brought = {target for folder in config_dirs for target in _targets_in_folder(Path(folder).expanduser())}
        brought |= {value for key, value in _split_overrides(overrides) if key.endswith(TARGET)}
        return cls(installed_targets() | brought)

    def including(self, config: Any) -> Allowlist:
        """Also the targets of `config`, a config this command composed from trusted sources alone."""
        return Allowlist(self.targets | {str(value) for key, value in _leaves(_plain(config)) if key.endswith(TARGET)})


# `_target_`s the shipped conf/ named before and no longer does, which the configs stored in older runs' checkpoints
# still name; each is still built (conf/logging/ named VisualSettings until reporting/pictures/).
RETIRED_TARGETS = frozenset({"visionlab.reporting.visual_log.VisualSettings"})


@functools.cache
def installed_targets() -> frozenset[str]:
    return frozenset(_targets_in_folder(config_dir())) | frozenset(EXTERNAL) | RETIRED_TARGETS


def _targets_in_folder(folder: Path) -> set[str]:
    targets: set[str] = set()
    for file in sorted(folder.rglob("*.yaml")):
        try:
            content = yaml.load(file.read_text(), Loader=YAML_LOADER)
        except (OSError, yaml.YAMLError):  # Hydra says so in its own words if the file is used
            continue
        targets |= {str(value) for key, value in _leaves(content) if key.endswith(TARGET)}
    return targets


def check_stored(config: Any, source: Path | str, allowed: Allowlist) -> None:
    """Refuse, naming the file, the key and the value, a config that names an unknown target or an unsafe resolver."""
    for key, value in _leaves(_plain(config)):
        if key.endswith(TARGET) and (not isinstance(value, str) or value not in allowed.targets):
            raise UserError(
                f"{source}: {key}={value} is not a component this installation builds, so nothing was imported "
                "(a file may name only what conf/ names; a class of your own is trusted when this command "
                "names it: --config-dir DIR holding its YAML, or that key=value typed on the command line)"
            )
        _check_resolvers(key, value, source)


def check_resolvers(config: Any, source: Path | str) -> None:
    """For a config that is resolved but never built (a sweep's `multirun.yaml`): its resolvers only."""
    for key, value in _leaves(_plain(config)):
        _check_resolvers(key, value, source)


def check_overrides(overrides: Iterable[str], source: Path | str, allowed: Allowlist) -> None:
    """The same for overrides read from a file (`.hydra/overrides.yaml`): `key=value` strings."""
    for key, value in _split_overrides(overrides):
        check_stored({key: value}, source, allowed)


def _check_resolvers(key: str, value: Any, source: Path | str) -> None:
    if not isinstance(value, str):
        return
    for name in RESOLVER_CALL.findall(value):
        if name not in SAFE_RESOLVERS:
            raise UserError(
                f"{source}: {key}={value} calls the resolver {name}, which a stored config may not use, so nothing "
                f"was read (allowed: plain ${{a.b}} references and {', '.join(sorted(SAFE_RESOLVERS))})"
            )


def keep_writes_here(config: Mapping[str, Any], today: DictConfig | None = None) -> dict[str, Any]:
    """A copy of a checked stored config whose write destinations are this command's (`today`'s), else off."""
    copy = _plain(config)
    for node, path in _target_nodes(copy, ""):
        for name, marker in writes_outside(node[TARGET]).items():
            if name in node:
                here = OmegaConf.select(today, f"{path}{name}", default=marker.off) if today is not None else marker.off
                node[name] = _plain(here)
    return copy


def _target_nodes(node: Any, path: str) -> Iterator[tuple[dict, str]]:
    if isinstance(node, dict):
        if isinstance(node.get(TARGET), str):
            yield node, path
        for key, child in node.items():
            yield from _target_nodes(child, f"{path}{key}.")


def _plain(config: Any) -> Any:
    if isinstance(config, (DictConfig, ListConfig)):
        return OmegaConf.to_container(config, resolve=False)
    if isinstance(config, Mapping):
        return {key: _plain(value) for key, value in config.items()}
    if isinstance(config, list | tuple):
        return [_plain(value) for value in config]
    return config


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) for every value under `node`, list items as key[i]."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            yield from _leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from _leaves(value, f"{prefix}[{index}]")
    else:
        yield prefix, node


def split_config_dirs(args: Iterable[str]) -> tuple[list[str], list[str]]:
    """The folders of `--config-dir DIR` / `-cd DIR` / `--config-dir=DIR` on a command line, and the other arguments."""
    folders, rest, given = [], [], iter(args)
    for arg in given:
        name, sep, value = arg.partition("=")
        if name in CONFIG_DIR_OPTIONS:
            value = value if sep else next(given, "")
            if not value:
                raise UserError(f"{name} needs a folder after it, e.g. {name} my_configs")
            folders.append(value)
        else:
            rest.append(arg)
    return folders, rest


def _split_overrides(overrides: Iterable[str]) -> Iterator[tuple[str, str]]:
    for override in overrides:
        key, sep, value = str(override).partition("=")
        if sep:
            yield key.lstrip("~+"), value.strip().strip("'\"")
