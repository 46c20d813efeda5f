"""The model's graph in TensorBoard's Graphs tab, traced once at the start."""

from __future__ import annotations

import logging
import warnings
from typing import Annotated

import torch

from visionlab.checks import Switch
from visionlab.errors import DiskFull
from visionlab.reporting.pictures.picture import Picture

log = logging.getLogger("visionlab")


class Graph(Picture):
    """Traced on two val images; a model that does not trace (kNN) logs one line and the run goes on."""

    def __init__(self, graph: Annotated[bool, Switch()] = True):
        self.on = graph

    def start(self) -> None:
        if not self.on:
            return
        model, val = self.subject.model, self.subject.splits.val
        example, _ = val.batch(torch.arange(min(2, len(val)), device=val.labels.device))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit.trace's deprecation and tracer warnings
                self.reporter.graph(model, example)
        except DiskFull:
            raise
        except Exception as exc:  # any model may fail to trace; the run goes on without its graph
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            log.info(
                "model graph: %s did not trace (%s: %s), so TensorBoard's Graphs tab stays empty",
                type(model).__name__,
                type(exc).__name__,
                reason,
            )
