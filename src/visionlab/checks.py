"""What each config value accepts, declared once, beside the code that reads it (docs/architecture.md, "Config checks").

A component declares its arguments' types and ranges in its signature (or dataclass fields):

    hidden: Annotated[Sequence[int], Each(Whole(1))] = (512,)

and `check_node` reads those declarations off the `_target_` of every config node, so a new
model, loss or dataset is checked without a line anywhere else. torch's own classes, which
declare nothing, are described in EXTERNAL. A value that fails names its key, itself and what
is accepted: `model.dropout=1.5 is invalid: use a number in [0, 1), such as 0.25`.

What a declaration cannot see (a value that fails only together with others, or only in use)
`config.build` and `rejections.first_use` turn into the same kind of one-line error.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import re
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from visionlab import patches
from visionlab.errors import UserError


def shown(value: Any) -> str:
    """A value as the user would type it back: null, true, [16, 32], 'fast'."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str) and value.isprintable() and "'" not in value:
        return f"'{value}'"  # not repr, which doubles a regular expression's backslashes
    return repr(value)


class Rule:
    """One kind of accepted value. `noun` reads in a sentence: "a whole number of at least 1"."""

    verdict = "invalid"

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def noun(self, plural: bool = False) -> str:
        raise NotImplementedError

    def why(self, value: Any) -> str:
        """What is wrong with a refused value where the noun alone does not tell (a regular expression's error)."""
        return ""

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            because = self.why(value)
            raise UserError(
                f"{key}={shown(value)} is {self.verdict}{f' ({because})' if because else ''}: use {self.noun()}"
            )


def _is_whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclasses.dataclass(frozen=True)
class Whole(Rule):
    min: int | None = None
    max: int | None = None
    unit: str = ""  # "epochs", "pixels": what is counted

    def accepts(self, value: Any) -> bool:
        return _is_whole(value) and (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def noun(self, plural: bool = False) -> str:
        text = "whole numbers" if plural else "a whole number"
        if self.unit:
            text += f" of {self.unit}"
        if self.min is not None and self.max is not None:
            return f"{text} from {self.min} to {self.max}"
        if self.min is not None:
            return f"{text} of at least {self.min}"
        return text


@dataclasses.dataclass(frozen=True)
class Number(Rule):
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    example: float | None = None

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:  # nan
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.lt is None or value < self.lt)
            and (self.le is None or value <= self.le)
        )

    def noun(self, plural: bool = False) -> str:
        text = "numbers" if plural else "a number"
        low = ("[", self.ge) if self.ge is not None else ("(", self.gt) if self.gt is not None else None
        high = ("]", self.le) if self.le is not None else (")", self.lt) if self.lt is not None else None
        if low and high:
            text += f" in {low[0]}{low[1]:g}, {high[1]:g}{high[0]}"
        elif low:
            text += f" of at least {low[1]:g}" if low[0] == "[" else f" greater than {low[1]:g}"
        elif high:
            text += f" of at most {high[1]:g}" if high[0] == "]" else f" less than {high[1]:g}"
        if self.example is not None and not plural:
            text += f", such as {self.example:g}"
        return text


class OneOf(Rule):
    """One of some names. Numbers in the list (precision's 32) also match as text, but a bool never does."""

    verdict = "unknown"

    def __init__(self, *choices: Any):
        self.choices = choices

    def accepts(self, value: Any) -> bool:
        return not isinstance(value, bool) and (value in self.choices or str(value) in map(str, self.choices))

    def noun(self, plural: bool = False) -> str:
        return "one of " + ", ".join(map(str, self.choices))


class Switch(Rule):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def noun(self, plural: bool = False) -> str:
        return "true or false"


class Text(Rule):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and value.strip() != ""

    def noun(self, plural: bool = False) -> str:
        return "texts" if plural else "a text"


class Address(Rule):
    """Where a server listens, as host:port: a name or an IP address, and a port from 1 to 65535."""

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        host, _, port = value.rpartition(":")
        named = bool(host.strip("[]")) and not any(c.isspace() for c in host)
        return named and port.isdigit() and 0 < int(port) < 65536

    def noun(self, plural: bool = False) -> str:
        return "host:port, such as node0:29500"


@dataclasses.dataclass(frozen=True)
class Each(Rule):
    """A list whose every item passes `item` (at least one item unless `empty_ok`; exactly `length` if given)."""

    item: Rule
    length: int | None = None
    example: str | None = None
    empty_ok: bool = False

    def accepts(self, value: Any) -> bool:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, ListConfig)):
            return False
        items = list(value)
        return (
            (bool(items) or self.empty_ok)
            and (self.length is None or len(items) == self.length)
            and all(self.item.accepts(v) for v in items)
        )

    def noun(self, plural: bool = False) -> str:
        size = f"{self.length} " if self.length else ""
        text = f"a list of {size}{self.item.noun(plural=True)}"
        return text + (f", such as {self.example}" if self.example else "")


class Pattern(Rule):
    """A regular expression with a group: the first, or the one called `group`, is what it picks out of a text."""

    def __init__(self, group: str, example: str):
        self.group = group
        self.example = example

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and not self.why(value)

    def why(self, value: Any) -> str:
        if not isinstance(value, str):
            return ""
        try:
            compiled = re.compile(value)
        except re.error as exc:
            return str(exc)
        return "" if compiled.groups else "it has no group"

    def noun(self, plural: bool = False) -> str:
        return (
            f"a regular expression whose first group, or the group named {self.group}, is the {self.group}, "
            f"such as {self.example}"
        )


class Either(Rule):
    def __init__(self, *rules: Rule):
        self.rules = rules

    def accepts(self, value: Any) -> bool:
        return any(rule.accepts(value) for rule in self.rules)

    def why(self, value: Any) -> str:
        return next((because for rule in self.rules if (because := rule.why(value))), "")

    def noun(self, plural: bool = False) -> str:
        return ", or ".join(rule.noun(plural) for rule in self.rules)


class Maybe(Either):
    """The rule, or null for "off" / "all" / "automatic", as the key's comment in conf/ says."""

    def __init__(self, rule: Rule):
        super().__init__(rule)

    def accepts(self, value: Any) -> bool:
        return value is None or super().accepts(value)

    def noun(self, plural: bool = False) -> str:
        return super().noun(plural) + ", or null"


# Learning rates and decay factors, as torch's optimizers take them.
LR = Number(gt=0, example=0.001)
DECAY = Number(ge=0, example=0.0001)
MOMENTUM = Number(ge=0, lt=1, example=0.9)
BETAS = Each(Number(ge=0, lt=1), length=2, example="[0.9, 0.999]")
EPS = Number(gt=0, example=1e-8)

# torch's classes declare nothing: their keys are described here, in one place.
EXTERNAL: dict[str, dict[str, Rule]] = {
    "torch.optim.SGD": {
        "lr": LR,
        "momentum": MOMENTUM,
        "dampening": Number(ge=0, le=1),
        "weight_decay": DECAY,
        "nesterov": Switch(),
    },
    "torch.optim.Adam": {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": DECAY, "amsgrad": Switch()},
    "torch.optim.AdamW": {"lr": LR, "betas": BETAS, "eps": EPS, "weight_decay": DECAY, "amsgrad": Switch()},
    "torch.optim.RMSprop": {
        "lr": LR,
        "alpha": Number(ge=0, le=1, example=0.99),
        "eps": EPS,
        "weight_decay": DECAY,
        "momentum": MOMENTUM,
        "centered": Switch(),
    },
    "torch.optim.Adagrad": {"lr": LR, "lr_decay": DECAY, "weight_decay": DECAY, "eps": EPS},
    "torch.nn.CrossEntropyLoss": {"label_smoothing": Number(ge=0, lt=1, example=0.1)},
}


@dataclasses.dataclass(frozen=True)
class WritesOutside:
    """Marks an argument that makes a component write outside the run folder (a cache folder, a download).

    A config read back from a file never sets it (trust.keep_writes_here): the reader's command
    gives its value, else `off`, the value that writes nothing there.
    """

    off: Any = None


def declared(target: Any) -> Mapping[str, Rule]:
    """The rules a `_target_` (a dotted name, or the object itself) declares for its arguments."""
    if isinstance(target, str) and target in EXTERNAL:
        return EXTERNAL[target]
    return {name: mark for name, marks in _annotations(target).items() for mark in marks if isinstance(mark, Rule)}


def writes_outside(target: Any) -> Mapping[str, WritesOutside]:
    """The arguments of a `_target_` that name a place to write outside the run."""
    return {
        name: mark for name, marks in _annotations(target).items() for mark in marks if isinstance(mark, WritesOutside)
    }


@functools.cache
def _annotations(target: Any) -> Mapping[str, tuple[Any, ...]]:
    """Each argument's `Annotated` metadata, read off a class's fields and `__init__`, or a function's signature."""
    if isinstance(target, str):
        from hydra.utils import get_object

        try:
            target = get_object(target)
        except Exception:  # a misspelled _target_: instantiate says so in its own words
            return {}
    sources = [target, target.__init__] if inspect.isclass(target) else [target]
    hints: dict[str, Any] = {}
    for source in sources:
        try:
            hints.update(typing.get_type_hints(source, include_extras=True))
        except (NameError, TypeError):
            continue
    return {name: getattr(hint, "__metadata__", ()) for name, hint in hints.items()}


def check_node(node: DictConfig, rules: Mapping[str, Rule], prefix: str) -> None:
    for name, rule in rules.items():
        if name in node:
            rule.check(f"{prefix}{name}", node[name])


def handed_on(node: DictConfig) -> Mapping[str, Rule]:
    """The rules for the keys a `_target_` takes as `**settings` and hands on to the targets listed under one of its
    keys, the one its class attribute `hands_settings_to` names: what those targets declare. The logging group's
    settings (`logging.graph`) are its pictures' (reporting/pictures/log.py)."""
    key = getattr(_target_object(node._target_), "hands_settings_to", None)
    listed = node.get(key) if isinstance(key, str) else None
    if not isinstance(listed, DictConfig):
        return {}
    rules: dict[str, Rule] = {}
    for name in listed:
        child = patches.stored_node(listed, name)
        if isinstance(child, DictConfig) and "_target_" in child:
            rules |= declared(child._target_)
    return rules


def _target_object(target: Any) -> Any:
    if not isinstance(target, str):
        return target
    from hydra.utils import get_object

    try:
        return get_object(target)
    except Exception:  # a misspelled _target_: instantiate says so in its own words
        return None


def check_targets(node: DictConfig, prefix: str = "") -> None:
    """Every node with a `_target_` under `node`, depth first, against what its target declares
    (and what the targets it hands its settings on to declare: `handed_on`)."""
    if "_target_" in node:
        check_node(node, {**handed_on(node), **declared(node._target_)}, prefix)
    for key in node:
        child = patches.stored_node(node, key)
        if isinstance(child, DictConfig):
            check_targets(child, f"{prefix}{key}.")
