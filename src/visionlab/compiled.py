"""A model compiled by `trainer.compile` (training/speed.py's prepare_model), run as plain PyTorch where it is
looked inside, and what its graph must leave out (the whitening layer's fit, models/blocks.py).

Its own module because the run (experiment/partition.py, for the test pass), the pictures
(reporting/pictures/log.py) and the models need it.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import Any

import torch


def kept_out(function: Callable[..., Any]) -> Callable[..., Any]:
    """`function` kept out of torch.compile's graphs, run eagerly. Where torch._dynamo was never loaded nothing is
    compiled, so it is `function` itself: torch.compiler.disable imports dynamo, seconds of a run's start."""
    if "torch._dynamo" not in sys.modules:
        return function
    return torch.compiler.disable(function)


def eager() -> contextlib.AbstractContextManager:
    """Runs a compiled model as plain PyTorch inside it: hooks put on its layers after it was compiled
    (the test pass's embedding recorder, Grad-CAM's feature maps) are not in the compiled graph, and
    torch.compile does not recompile for them, so outside it they never fire. No effect on a model
    that was not compiled. Where torch._dynamo was never loaded nothing was compiled, and it stays unloaded:
    its import takes over a second (kNN, vl-eval and vl-predict never need it)."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")
