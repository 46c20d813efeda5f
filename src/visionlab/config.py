"""Bad config fails here, before any data is loaded, or at the latest before the first step.

Three nets, one kind of error (exit 2, one line naming the key, the value and what is accepted):
1. `validate`: every value against what its component declares (checks.py), and the few rules
   that tie two groups together.
2. `build`: a key the component's signature does not take, or a rejection its constructor states
   on purpose (`SettingRejected`; torch's checks).
3. `first_use` (rejections.py): the model and loss run on two images before training, so a model that states it
   cannot take the data's shape, or a loss that rejects its settings at its first call, fails now
   and not after minutes of loading.

Anything else a component raises is a bug: exit 1, its traceback in train.log (docs/architecture.md,
"Config checks").
"""

from __future__ import annotations

import functools
import inspect
from typing import Annotated, Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

from visionlab import patches
from visionlab.checks import Maybe, OneOf, Switch, Text, Whole, check_node, check_targets, declared, shown
from visionlab.errors import UserError
from visionlab.objective import DIRECTIONS
from visionlab.rejections import named_group, rejections
from visionlab.suggest import did_you_mean
from visionlab.training.device import resolve_device
from visionlab.training.distributed import processes

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
    check_nodes(cfg.trainer)
    nodes = cfg.trainer.get("nodes", 1)
    ranks = processes(cfg.trainer.get("devices", 1)) * nodes
    if isinstance(cfg.trainer.batch_size, int) and cfg.trainer.batch_size < ranks:
        on = f" on trainer.nodes={nodes}" if nodes > 1 else ""
        raise UserError(
            f"trainer.batch_size={cfg.trainer.batch_size} with trainer.devices={cfg.trainer.devices}{on}: the batch "
            f"is shared by the {ranks} processes, so use a batch_size of at least {ranks}"
        )
    if ranks > 1 and cfg.trainer.get("sync_batchnorm") and resolve_device(cfg.trainer.device).type != "cuda":
        raise UserError(
            "trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm does not run on the CPU): "
            "use trainer.sync_batchnorm=false, each process's own BatchNorm statistics"
        )
    if cfg.optimizer.get("nesterov") and not cfg.optimizer.get("momentum"):
        raise UserError(
            "optimizer.nesterov=true needs momentum: set optimizer.momentum=0.9 (or use optimizer=momentum)"
        )


def check_nodes(trainer: DictConfig) -> None:
    """trainer.node_rank and trainer.rendezvous against trainer.nodes, once each is valid alone."""
    nodes, node_rank, rendezvous = trainer.get("nodes", 1), trainer.get("node_rank", 0), trainer.get("rendezvous")
    if node_rank >= nodes:
        raise UserError(
            f"trainer.node_rank={node_rank} with trainer.nodes={nodes}: number the nodes from 0 to {nodes - 1}, one "
            "number each (node 0 writes the run)"
        )
    if nodes > 1 and rendezvous is None:
        raise UserError(
            f"trainer.nodes={nodes} needs trainer.rendezvous=HOST:PORT, where the nodes meet: node 0's address and a "
            "free port there, the same on every node"
        )
    if nodes == 1 and rendezvous is not None:
        raise UserError(
            f"trainer.rendezvous={shown(rendezvous)} with trainer.nodes=1: a run on one node has no rendezvous, so "
            "drop it (or set trainer.nodes)"
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


def target_of(component: Any) -> Any:
    """The class or function a built `_partial_` group calls (through `build`'s checked partial)."""
    while isinstance(component, functools.partial):
        component = component.args[1] if component.func is _call_checked else component.func
    return component


def _call_checked(group: str, component: functools.partial, *args: Any, **kwargs: Any) -> Any:
    """A `_partial_` group's call: its config plus the run's arguments must bind before the component runs."""
    try:
        inspect.signature(component).bind(*args, **kwargs)
    except TypeError as exc:  # a required argument the config does not give (the run's own are always given)
        target = _target_name(component.func)
        raise UserError(f"{named_group(group)}: {target} {exc} (set it under {group}. in conf/{group}/)") from None
    except ValueError:  # no signature to read
        pass
    with rejections(group, component.func):
        return component(*args, **kwargs)


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
