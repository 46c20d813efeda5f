"""Console entry points. Thin: Hydra composes the config, `experiment.run` does the work."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from visionlab import experiment
from visionlab.errors import UserError

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")
log = logging.getLogger("visionlab")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def train(cfg: DictConfig) -> float:
    """`vl-train`: returns the objective so Hydra sweepers can optimize it."""
    try:
        metrics = experiment.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except UserError as exc:
        log.error("error: %s", exc)
        sys.exit(exc.exit_code)
    return float(metrics[cfg.objective])
