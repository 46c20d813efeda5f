"""A model compiled by `trainer.compile` (training/speed.py's prepare_model),
run as plain PyTorch where it is looked inside.

Its own module because both the run (experiment/partition.py, for the test pass) and the pictures
(reporting/pictures/log.py) need it.
"""

from __future__ import annotations

import contextlib
import sys

import torch


def eager() -> contextlib.AbstractContextManager:
    """Runs a compiled model as plain PyTorch inside it: hooks put on its layers after it was compiled
    (the test pass's embedding recorder, Grad-CAM's feature maps) are not in the compiled graph, and
    torch.compile does not recompile for them, so outside it they never fire. No effect on a model
    that was not compiled. Where torch._dynamo was never loaded nothing was compiled, and it stays unloaded:
    its import takes over a second (kNN, vl-eval and vl-predict never need it)."""
    if "torch._dynamo" not in sys.modules:
        return contextlib.nullcontext()
    return torch.compiler.set_stance("force_eager")
