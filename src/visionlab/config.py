"""Bad config fails here, before any data is loaded, or at the latest before the first step.

Three nets, one kind of error (exit 2, one line naming the key, the value and what is accepted):
1. `validate`: every value against what its component declares (checks.py), and the few rules
   that tie two groups together.
2. `build`: a key the component's signature does not take, or a rejection its constructor states
   on purpose (`SettingRejected`; torch's checks).
3. `first_use`: the model and loss run on two images before training, so a model that states it
   cannot take the data's shape, or a loss that rejects its settings at its first call, fails now
   and not after minutes of loading.

Anything else a component raises is a bug: exit 1, its traceback in train.log (docs/architecture.md,
"Config checks").
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Iterator
from typing import Annotated, Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from visionlab import patches
from visionlab.checks import EXTERNAL, Maybe, OneOf, Switch, Text, Whole, check_node, check_targets, declared
from visionlab.errors import SettingRejected, UserError
from visionlab.objective import DIRECTIONS
from visionlab.suggest import did_you_mean
from visionlab.training.device import resolve_device

OBJECTIVES = tuple(DIRECTIONS)


class RunSettings:
    """The top level of conf/train.yaml."""

    seed: Annotated[int, Whole()]
    objective: Annotated[str, OneOf(*OBJECTIVES)]
    resume: Annotated[str | None, Maybe(Text())]
    lr_find: Annotated[bool, Switch()]
    summary_only: Annotated[bool, Switch()]


def validate(cfg: DictConfig) -> None:
    check_node(cfg, declared(RunSettings), "")
    check_targets(cfg)
    resolve_device(cfg.trainer.device)
    if cfg.trainer.batch_size == 1 and cfg.model.get("batchnorm"):
        raise UserError(
            "trainer.batch_size=1 with model.batchnorm=true: BatchNorm normalizes over the batch, so use "
            "model.batchnorm=false or batch_size of at least 2"
        )
    if cfg.optimizer.get("nesterov") and not cfg.optimizer.get("momentum"):
        raise UserError(
            "optimizer.nesterov=true needs momentum: set optimizer.momentum=0.9 (or use optimizer=momentum)"
        )


HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")  # instantiate's, not the target's


def build(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """`instantiate(cfg[group])`; keys its target does not take, or a rejection it states, are config errors.

    Anything else the constructor raises is a bug and goes on as raised, with its own traceback. A
    `_partial_` group (optimizer, scheduler, regularization; the model with `_partial_=True`, since
    its input shape comes with the data) is checked the same way when the run calls it.
    """
    check_arguments(cfg[group], f"{group}.", group, partial=kwargs.get("_partial_", False))
    with rejections(group, cfg[group].get("_target_")):
        try:
            component = instantiate(cfg[group], **kwargs)
        except InstantiationException as exc:
            if exc.__cause__ is None:
                raise
            raise exc.__cause__ from None  # what the component raised, not Hydra's wrapper around it
    if isinstance(component, functools.partial):
        return functools.partial(_call_checked, group, component)
    return component


def _call_checked(group: str, component: functools.partial, *args: Any, **kwargs: Any) -> Any:
    """A `_partial_` group's call: its config plus the run's arguments must bind before the component runs."""
    try:
        inspect.signature(component).bind(*args, **kwargs)
    except TypeError as exc:  # a required argument the config does not give (the run's own are always given)
        target = _target_name(component.func)
        raise UserError(f"{_named(group)}: {target} {exc} (set it under {group}. in conf/{group}/)") from None
    except ValueError:  # no signature to read
        pass
    with rejections(group, component.func):
        return component(*args, **kwargs)


@contextlib.contextmanager
def rejections(group: str, target: Any, context: str = "") -> Iterator[None]:
    """Inside: a rejection a component states on purpose becomes the one-line config error of its group.

    Ours state it with `SettingRejected` (a plain `UserError` already names everything, and goes on as
    raised); torch's classes in checks.EXTERNAL state theirs as ValueError or TypeError. Anything else
    is a bug (docs/architecture.md, "Config checks").
    """
    try:
        yield
    except SettingRejected as exc:
        raise rejected(group, exc, context) from exc
    except (ValueError, TypeError) as exc:
        if not external(target):
            raise
        raise rejected(group, exc, context) from exc


def external(target: Any) -> bool:
    """Whether `target` (a dotted name or the class itself) is one of torch's classes in checks.EXTERNAL."""
    return target in EXTERNAL if isinstance(target, str) else target in _external_classes()


@functools.cache
def _external_classes() -> frozenset[Any]:
    return frozenset(get_object(name) for name in EXTERNAL)


def check_arguments(node: DictConfig, prefix: str, group: str, partial: bool = False) -> None:
    """Every key of a `_target_` node, and of those nested in it, is an argument its target takes; and,
    unless the target is called later with the rest (`_partial_`), every argument it requires is given."""
    if "_target_" in node and (parameters := _parameters(node._target_)) is not None:
        named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        given = [str(key) for key in node if key not in HYDRA_KEYS]
        unexpected = [key for key in given if key not in named]
        if unexpected and not any(p.kind is p.VAR_KEYWORD for p in parameters):
            key = unexpected[0]
            hint = did_you_mean(key, named, prefix + "{}")
            raise UserError(
                f"{prefix}{key} is not an argument of {node._target_}, which takes {', '.join(named)}"
                f"{': ' + hint if hint else ''} (see conf/{group}/)"
            )
        required = [p.name for p in parameters if p.name in named and p.default is p.empty]
        missing = [name for name in required if name not in given]
        if missing and not (partial or node.get("_partial_", False) or "_args_" in node):
            raise UserError(f"{prefix}{missing[0]} is missing: {node._target_} needs it (set it in conf/{group}/)")
    for key in node:
        child = patches.stored_node(node, key)
        if isinstance(child, DictConfig) and key not in HYDRA_KEYS:
            check_arguments(child, f"{prefix}{key}.", group)


def _parameters(target: str) -> list[inspect.Parameter] | None:
    """The arguments `target` takes; None where it cannot be found (instantiate says so) or has no signature."""
    try:
        return list(inspect.signature(get_object(target)).parameters.values())
    except Exception:  # a misspelled _target_, or a callable without a signature
        return None


def _target_name(target: Any) -> str:
    return f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}".lstrip(".")


def first_use(model: torch.nn.Module, loss_fn: Any, splits: Any) -> None:
    """One forward pass and one loss on two training images, touching no random state or statistics."""
    images, labels = splits.train.batch(torch.arange(min(2, len(splits.train)), device=splits.train.labels.device))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            with rejections("model", type(model), f"on {'x'.join(map(str, splits.in_shape))} inputs"):
                scores = model(images)
            if loss_fn is not None:
                with rejections("loss", type(loss_fn)):
                    loss_fn(scores, labels)
    finally:
        model.train(was_training)


def rejected(group: str, cause: Exception, context: str = "") -> UserError:
    """`model=cnn rejected dataset.shape=[1,4,4]: <the component's words>`, on one line."""
    _, given = _group_choice(group)
    settings = ", ".join(given) if given else f"its settings under {group}."
    reason = " ".join(str(cause).split()) or type(cause).__name__
    where = f" {context}" if context else ""
    return UserError(
        f"{_named(group)} rejected {settings}{where}: {reason[:300]} (see conf/{group}/ and the keys' comments there)"
    )


def _named(group: str) -> str:
    """`model=cnn` when Hydra composed this run, else `model`."""
    choice, _ = _group_choice(group)
    return f"{group}={choice}" if choice else group


def _group_choice(group: str) -> tuple[str | None, list[str]]:
    """The group's option (cnn) and the command-line overrides that touched it, when Hydra composed this run."""
    if not HydraConfig.initialized():
        return None, []
    hydra = HydraConfig.get()
    choice = hydra.runtime.choices.get(group)
    given = [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~").startswith(f"{group}.")]
    dataset = (
        [o for o in hydra.overrides.task if o.split("=", 1)[0].startswith("dataset.shape")] if group == "model" else []
    )
    return choice, given + dataset
