"""Checks on the composed config that must fail before any data is loaded.

Hydra already rejects unknown groups and keys; this catches values that have the right type
but make no sense, and says which key, which value, and what is accepted.
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from visionlab.errors import UserError
from visionlab.training.device import resolve_device
from visionlab.training.precision import PRECISIONS

OBJECTIVES = ("val/acc", "val/loss", "train/acc", "train/loss")


def _positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}={value!r} is invalid: use a whole number of at least 1")


def validate(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    _positive_int("trainer.epochs", trainer.epochs)
    batch_size = trainer.batch_size  # "all": full-batch gradient descent, one step per epoch
    if batch_size != "all" and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise UserError(f"trainer.batch_size={batch_size!r} is invalid: use a whole number of at least 1, or all for full-batch")
    if batch_size == 1 and cfg.model.get("batchnorm"):
        raise UserError("trainer.batch_size=1 with model.batchnorm=true: BatchNorm normalizes over the batch, so use model.batchnorm=false or batch_size of at least 2")
    _positive_int("trainer.eval_batch_size", trainer.eval_batch_size)
    _positive_int("trainer.log_every_n_steps", trainer.log_every_n_steps)
    if trainer.threads is not None:
        _positive_int("trainer.threads", trainer.threads)
    if trainer.checkpoint_every_steps is not None:
        _positive_int("trainer.checkpoint_every_steps", trainer.checkpoint_every_steps)
    if isinstance(trainer.precision, bool) or str(trainer.precision) not in PRECISIONS:
        raise UserError(f"trainer.precision={trainer.precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
    for switch in ("channels_last", "compile"):
        if not isinstance(trainer[switch], bool):
            raise UserError(f"trainer.{switch}={trainer[switch]!r} is invalid: use true or false")
    grad_clip = trainer.get("grad_clip")
    if grad_clip is not None and (isinstance(grad_clip, bool) or not isinstance(grad_clip, (int, float)) or grad_clip <= 0):
        raise UserError(f"trainer.grad_clip={grad_clip!r} is invalid: use a gradient norm greater than 0, such as 1.0, or null for no clipping")
    resolve_device(trainer.device)
    if cfg.objective not in OBJECTIVES:
        raise UserError(f"objective={cfg.objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise UserError(f"optimizer.lr={lr!r} is invalid: use a number greater than 0, such as 0.001")
    _check_optimizer(cfg.optimizer)


def _check_optimizer(optimizer: DictConfig) -> None:
    """The knobs torch would otherwise reject with a traceback, or (nesterov without momentum) reject late."""
    weight_decay = optimizer.get("weight_decay", 0.0)
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
        raise UserError(f"optimizer.weight_decay={weight_decay!r} is invalid: use a number of at least 0, such as 0.0001")
    momentum = optimizer.get("momentum", 0.0)
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0 <= momentum < 1:
        raise UserError(f"optimizer.momentum={momentum!r} is invalid: use a number in [0, 1), such as 0.9")
    if optimizer.get("nesterov") and not momentum:
        raise UserError("optimizer.nesterov=true needs momentum: set optimizer.momentum=0.9 (or use optimizer=momentum)")


def build(cfg: DictConfig, group: str, **kwargs: Any) -> Any:
    """`instantiate(cfg[group])`, with a user's mistake (bad value, unknown argument) kept to one line."""
    try:
        return instantiate(cfg[group], **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        if isinstance(cause, TypeError):
            raise UserError(f"{group}: {cause} (check the keys under {group}. against conf/{group}/)") from None
        raise
