"""visionlab: train and compare image classifiers, from the command line (vl-train) or from Python.

    import visionlab
    run = visionlab.train("model=cnn", "trainer.epochs=3")   # exactly what `vl-train model=cnn trainer.epochs=3` runs
    run.metrics["test/acc"], run.history, run.show("val/confusion_matrix")

`train`, `sweep`, `evaluate`, `predict`, `open_run` and `Run` (docs/api.md); a refused value raises `UserError`.
They load on first use, so `import visionlab` stays quick.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Run", "UserError", "evaluate", "open_run", "predict", "sweep", "train"]

if TYPE_CHECKING:
    from visionlab.api import evaluate, open_run, predict, sweep, train
    from visionlab.errors import UserError
    from visionlab.runs import Run


def __getattr__(name: str) -> Any:
    if name == "UserError":
        from visionlab.errors import UserError

        return UserError
    if name == "Run":
        from visionlab.runs import Run

        return Run
    if name in __all__:
        from visionlab import api

        return getattr(api, name)
    raise AttributeError(f"module 'visionlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
