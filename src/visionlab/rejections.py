"""A component's own rejection of its settings, turned into the one-line config error of its group.

`config.build` applies it when a component is made; the learners when the model and loss first run
(`first_use`), before training, so a model that states it cannot take the data's shape fails now
and not after minutes of loading (docs/architecture.md, "Config checks").
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object

from visionlab.checks import EXTERNAL
from visionlab.errors import SettingRejected, UserError


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
        f"{named_group(group)} rejected {settings}{where}: {reason[:300]} "
        f"(see conf/{group}/ and the keys' comments there)"
    )


def named_group(group: str) -> str:
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
