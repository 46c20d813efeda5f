"""Learners: how each kind of model learns (docs/architecture.md, "Data flow")."""

from __future__ import annotations

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
]
