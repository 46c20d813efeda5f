"""A kNN's choice of k on val, as a structured result.

The metrics.json keys `val/acc@<k>` and `cv/fold_<i>/val_acc@<k>` are written and read here only:
by the memorizing learner, k-fold's summary and the sweep report's curve. No torch: vl-report reads it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ACC_AT_K = re.compile(r"val/acc@(\d+)")


@dataclass(frozen=True)
class KChoice:
    """Accuracy on val for each candidate k, and the k kept for test: the best (ties: the smaller k)."""

    accuracy: Mapping[int, float]

    @property
    def best(self) -> int:
        return max(self.accuracy, key=lambda k: (self.accuracy[k], -k))

    def tags(self) -> dict[int, str]:
        """Each k's metrics.json and TensorBoard tag, `val/acc@<k>`."""
        return {k: f"val/acc@{k}" for k in self.accuracy}

    def entries(self) -> dict[str, Any]:
        return {tag: self.accuracy[k] for k, tag in self.tags().items()}

    @classmethod
    def mean(cls, folds: Sequence[KChoice]) -> KChoice:
        """The folds' mean accuracy for each k: k-fold chooses the k with the best mean, not each fold's own."""
        return cls({k: statistics.fmean(fold.accuracy[k] for fold in folds) for k in folds[0].accuracy})

    @classmethod
    def of(cls, metrics: Mapping[str, Any]) -> KChoice | None:
        """The choice a finished run's metrics.json records, or None (not a kNN, or a single k)."""
        accuracy = {int(m[1]): value for key, value in metrics.items() if (m := ACC_AT_K.fullmatch(key))}
        return cls(dict(sorted(accuracy.items()))) if accuracy else None

    @staticmethod
    def fold_tag(fold: int, k: int) -> str:
        """One fold's accuracy at k in a k-fold run's metrics.json: the sweep report's ± band."""
        return f"cv/fold_{fold}/val_acc@{k}"
