"""Bad config fails here, before any data is loaded, or at the latest before the first step.

Three nets, one kind of error (exit 2, one line naming the key, the value and what is accepted):
1. `validate`: every value against what its component declares (checks.py), and the few rules
   that tie two groups together.
2. `build`: a component whose constructor rejects its config anyway (torch's checks, say).
3. `first_use`: the model and loss run on two images before training, so a model that cannot
   take the data's shape, or a loss that rejects its settings at its first call, fails now and
   not after minutes of loading.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from visionlab.checks import Maybe, OneOf, Switch, Text, Whole, check_node, check_targets, declared
from visionlab.errors import UserError
from visionlab.training.device import resolve_device

OBJECTIVES = ("val/acc", "val/loss", "train/acc", "train/loss")


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
        raise UserError("trainer.batch_size=1 with model.batchnorm=true: BatchNorm normalizes over the batch, so use model.batchnorm=false or batch_size of at least 2")
    if cfg.optimizer.get("nesterov") and not cfg.optimizer.get("momentum"):
        raise UserError("optimizer.nesterov=true needs momentum: set optimizer.momentum=0.9 (or use optimizer=momentum)")


# What a component raises when its settings are wrong (torch's own checks, a shape that cannot work).
REJECTIONS = (ValueError, TypeError, RuntimeError, IndexError, KeyError, ArithmeticError, AssertionError)


def build(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """`instantiate(cfg[group])`; whatever the component raises about its config is a config error.

    A `_partial_` group (optimizer, scheduler, regularization; the model with `_partial_=True`,
    since its input shape comes with the data) is checked the same way when the run calls it.
    """
    try:
        component = instantiate(cfg[group], **kwargs)
    except InstantiationException as exc:
        error = config_error(group, exc.__cause__)
        if error is None:
            raise
        raise error from None
    if isinstance(component, functools.partial):
        return functools.partial(_call_rejecting, group, component)
    return component


def _call_rejecting(group: str, component: functools.partial, *args: Any, **kwargs: Any) -> Any:
    try:
        return component(*args, **kwargs)
    except UserError:
        raise
    except REJECTIONS as exc:
        raise config_error(group, exc) from exc


def config_error(group: str, cause: BaseException | None) -> UserError | None:
    """What a component's complaint about its settings says to the user; None if it is no such complaint."""
    if isinstance(cause, UserError):
        return cause
    if isinstance(cause, TypeError) and "unexpected keyword argument" in str(cause):
        return UserError(f"{group}: {cause} (check the keys under {group}. against conf/{group}/)")
    if isinstance(cause, REJECTIONS):
        return rejected(group, cause)
    return None


def first_use(model: torch.nn.Module, loss_fn: Any, splits: Any) -> None:
    """One forward pass and one loss on two training images, touching no random state or statistics."""
    images, labels = splits.train.batch(torch.arange(min(2, len(splits.train)), device=splits.train.labels.device))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            try:
                scores = model(images)
            except REJECTIONS as exc:
                raise rejected("model", exc, f"on {'x'.join(map(str, splits.in_shape))} inputs") from exc
            if loss_fn is not None:
                try:
                    loss_fn(scores, labels)
                except REJECTIONS as exc:
                    raise rejected("loss", exc) from exc
    finally:
        model.train(was_training)


def rejected(group: str, cause: Exception, context: str = "") -> UserError:
    """`model=cnn (CNN) rejected model.kernel_size=0 on 1x4x4 inputs: <torch's words>`, on one line."""
    choice, given = _group_choice(group)
    name = f"{group}={choice}" if choice else group
    settings = ", ".join(given) if given else f"its settings under {group}."
    reason = " ".join(str(cause).split()) or type(cause).__name__
    where = f" {context}" if context else ""
    return UserError(f"{name} rejected {settings}{where}: {reason[:300]} (see conf/{group}/ and the keys' comments there)")


def _group_choice(group: str) -> tuple[str | None, list[str]]:
    """The group's option (cnn) and the command-line overrides that touched it, when Hydra composed this run."""
    if not HydraConfig.initialized():
        return None, []
    hydra = HydraConfig.get()
    choice = hydra.runtime.choices.get(group)
    given = [o for o in hydra.overrides.task if o.split("=", 1)[0].lstrip("+~").startswith(f"{group}.")]
    dataset = [o for o in hydra.overrides.task if o.split("=", 1)[0].startswith("dataset.shape")] if group == "model" else []
    return choice, given + dataset

