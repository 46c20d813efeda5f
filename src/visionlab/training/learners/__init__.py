"""Learners: how each kind of model learns (docs/architecture.md, "Data flow")."""

from __future__ import annotations

from collections.abc import Callable

from visionlab.config import target_of
from visionlab.training.learners.base import Learner, Lesson, ReportScalars, Search
from visionlab.training.learners.gradient import GradientLearner
from visionlab.training.learners.knn_choice import KChoice
from visionlab.training.learners.memorizing import MemorizingLearner

__all__ = [
    "GradientLearner",
    "KChoice",
    "Learner",
    "Lesson",
    "MemorizingLearner",
    "ReportScalars",
    "Search",
    "memorizes",
]


def memorizes(model: Callable) -> bool:
    """Whether the model's class (`model`: it, or the run's partial of it) declares that it memorizes its train
    split (kNN's `memorizes = True`)."""
    return bool(getattr(target_of(model), "memorizes", False))
