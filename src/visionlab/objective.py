"""What a run is judged by: the metric that picks its best epoch, best.pt, early stopping and a search's trials,
and which way that metric is better (docs/architecture.md, "metrics.json")."""

from __future__ import annotations

# Each objective `trainer` and a search may select on, with the way it is better.
DIRECTIONS = {"val/acc": "maximize", "val/loss": "minimize", "train/acc": "maximize", "train/loss": "minimize"}


def maximized(objective: str) -> bool:
    return DIRECTIONS[objective] == "maximize"


def better(value: float, than: float, objective: str, by: float = 0.0) -> bool:
    """`value` beats `than` by more than `by` in the objective's direction."""
    return value > than + by if maximized(objective) else value < than - by
