"""What TensorBoard's HParams tab shows for a run: the choices that set it apart, and its final metrics."""

from __future__ import annotations

from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

# The final numbers a sweep is compared by, when the run has them (TensorBoard tags, as in metrics.json).
HPARAM_METRICS = ("val/acc", "val/loss", "test/acc", "test/loss", "cv/val_acc_mean", "cv/val_acc_std")


def run_hparams(cfg: DictConfig) -> dict[str, bool | int | float | str]:
    """The option chosen in each config group and every value set on the command line.

    For example {"model": "mlp", "optimizer": "sgd", "optimizer.lr": 0.01, "seed": 0}: what
    differs between the jobs of a sweep, each with its resolved value.
    """
    hparams: dict[str, Any] = {"seed": cfg.seed}
    if not HydraConfig.initialized():
        return hparams
    hydra_cfg = HydraConfig.get()
    choices = {group: option for group, option in hydra_cfg.runtime.choices.items() if not group.startswith("hydra")}
    hparams |= {group: option for group, option in choices.items() if option is not None}
    for override in hydra_cfg.overrides.task:
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in choices:
            hparams[key] = as_hparam(OmegaConf.select(cfg, key))
    return hparams


def as_hparam(value: Any) -> bool | int | float | str:
    """HParams takes numbers, booleans and strings: lists and null are shown as text."""
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(OmegaConf.to_container(value) if OmegaConf.is_config(value) else value).replace("None", "null")
