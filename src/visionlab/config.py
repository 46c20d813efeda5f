"""Checks on the composed config that must fail before any data is loaded.

Hydra already rejects unknown groups and keys; this catches values that have the right type
but make no sense, and says which key, which value, and what is accepted.
"""

from __future__ import annotations

from omegaconf import DictConfig

from visionlab.errors import UserError
from visionlab.training.device import resolve_device

OBJECTIVES = ("val/acc", "val/loss", "train/acc", "train/loss")


def _positive_int(key: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"{key}={value!r} is invalid: use a whole number of at least 1")


def validate(cfg: DictConfig) -> None:
    trainer = cfg.trainer
    _positive_int("trainer.epochs", trainer.epochs)
    _positive_int("trainer.batch_size", trainer.batch_size)
    _positive_int("trainer.eval_batch_size", trainer.eval_batch_size)
    _positive_int("trainer.log_every_n_steps", trainer.log_every_n_steps)
    if trainer.threads is not None:
        _positive_int("trainer.threads", trainer.threads)
    resolve_device(trainer.device)
    if cfg.objective not in OBJECTIVES:
        raise UserError(f"objective={cfg.objective!r} is unknown: use one of {', '.join(OBJECTIVES)}")
    lr = cfg.optimizer.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or lr <= 0):
        raise UserError(f"optimizer.lr={lr!r} is invalid: use a number greater than 0, such as 0.001")
    val_fraction = cfg.dataset.get("val_fraction")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 < val_fraction < 1:
        raise UserError(f"dataset.val_fraction={val_fraction!r} is out of range: use a number strictly between 0 and 1")
