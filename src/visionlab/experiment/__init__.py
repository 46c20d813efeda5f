"""One run, from its config to its metrics: components built once, a run context, each partition trained by
its learner (docs/architecture.md, "Data flow")."""

from visionlab.experiment.components import (
    Components,
    build_components,
    fresh_model,
    load_data,
    partition_splits,
    prepare_data,
)
from visionlab.experiment.run import run

__all__ = ["Components", "build_components", "fresh_model", "load_data", "partition_splits", "prepare_data", "run"]
