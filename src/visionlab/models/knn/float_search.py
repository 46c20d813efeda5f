"""The float32 route: every distance, any input (features, normalized or projected images, per-channel scales).

float32 distances to every training row (one matrix product for L2 and cosine, `torch.cdist` for L1/Lp)
and `topk` for a few candidates more than k. float32 rounding could swap near-equal distances, so the
neighbours' distances are recomputed in float64, and a proven bound on the rounding (`_rounding_bound`)
says when the float32 shortlist is enough; when it is not (near ties, duplicated images) more rows are
recomputed until it is. The answer is therefore what a float64 brute force gives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from visionlab.models.knn.search import CANDIDATE_MARGIN, FLOAT32_UNIT_ROUNDOFF, Search, ranked


class FloatSearch(Search):
    """float32 rows (`features`, with their `p`-norms `norms`) searched by `distance` (l2, l1, lp, cosine);
    `to_features` turns a chunk of the model's inputs into rows like them (the model's preprocessing)."""

    stored_as = "float32 features"

    def __init__(
        self,
        features: Tensor,
        norms: Tensor,
        distance: str,
        p: float,
        chunk_size: int,
        to_features: Callable[[Tensor], Tensor],
    ):
        super().__init__(features, chunk_size)
        self.norms = norms
        self.distance = distance
        self.p = p
        self.to_features = to_features

    def nearest(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        found = [self._search(self.to_features(part), k) for part in x.split(self.chunk_size)]
        distances = torch.cat([d for d, _ in found])
        if self.distance == "l2":
            distances = distances.sqrt()  # searched as squared distances
        return distances, torch.cat([i for _, i in found])

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest for one chunk of query rows: float64 distances (squared for l2), indices.

        1. float32 distances to every training row; topk keeps k + CANDIDATE_MARGIN candidates.
           Where the float32 gap after the k-th is wider than twice the rounding bound, those k are
           the k nearest as a set, and only their distances are recomputed, to order them.
        2. Elsewhere (a near tie at the k-th) all candidates are recomputed; that is final when the
           k-th is closer than any row left out can be, even after rounding.
        3. Otherwise (many near-equal distances, duplicated images) every row that the rounding
           bound cannot rule out is recomputed.
        The float32 block (chunk x n_train) is the largest allocation and is freed before step 1's
        recomputing, which goes in pieces no larger than it.
        """
        train = self.features
        m = min(k + CANDIDATE_MARGIN, len(train))
        values, candidates = self._approx(q).topk(m, dim=1, largest=False)
        slack = self._rounding_bound(q)
        settled = values[:, k] - values[:, k - 1] > 2 * slack if m > k else torch.ones_like(slack, dtype=torch.bool)
        distances, indices = slack.new_empty(len(q), k), candidates.new_empty(len(q), k)
        for rows, width in ((settled, k), (~settled, m)):
            if rows.any():
                distances[rows], indices[rows] = self._rank(q[rows], candidates[rows, :width], k)
        if m < len(train):  # every row left out has float32 distance >= values[:, -1]
            for row in (~settled & (distances[:, k - 1] >= values[:, -1] - slack)).nonzero().flatten().tolist():
                near = (self._approx(q[row : row + 1])[0].double() <= distances[row, k - 1] + slack[row]).nonzero()
                distances[row], indices[row] = self._rank(q[row : row + 1], near.T, k)
        return distances, indices

    def _rank(self, q: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The first k of each row's candidates by (exact float64 distance, training index)."""
        return ranked(self._exact, q, self.features, candidates, k, self.chunk_size)

    def _approx(self, q: Tensor) -> Tensor:
        """float32 distances `[n, N]` from each query to every training row (squared for l2)."""
        train = self.features
        if self.distance == "l2":  # |x|^2 + |y|^2 - 2<x, y>: one matrix product
            return torch.addmm(self.norms.square(), q, train.T, alpha=-2).add_(q.square().sum(1, keepdim=True))
        if self.distance == "cosine":  # 1 - <x, y> of unit vectors
            return torch.addmm(q.new_ones(()), q, train.T, alpha=-1)
        return torch.cdist(q, train, p=self.p)

    def _exact(self, a: Tensor, b: Tensor) -> Tensor:
        """float64 distances between paired rows of a and b, in the units of `_approx`.

        In place on a's float64 copy, which promotes b's float32 values exactly, element by element.
        """
        a = a.double()
        if self.distance == "cosine":
            return (1 - a.mul_(b).sum(-1)).clamp_min(0)  # clipped like scikit-learn's cosine_distances
        if self.distance == "l2":
            return a.sub_(b).square_().sum(-1)
        return torch.linalg.vector_norm(a.sub_(b), ord=self.p, dim=-1)

    def _rounding_bound(self, q: Tensor) -> Tensor:
        """Per query, how far any float32 distance of `_approx` can be from the exact one.

        Each is a float32 sum over d features (plus a few norms); whatever the order of summation,
        such a sum is off by at most about (d + 2p + 4) unit roundoffs times the sum of the terms'
        magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3), and the norms
        bound those: (|x| + |y|)^2 for the matrix-product forms, |x|_p + |y|_p for cdist. Doubled for
        safety. It assumes full float32 matrix products (torch's default; not TF32 or bfloat16).
        """
        reach = torch.linalg.vector_norm(q.double(), ord=self.p, dim=1) + self.norms.max().double()
        power = 2 if self.distance in ("l2", "cosine") else 1
        return 2 * (q.shape[1] + 2 * self.p + 4) * FLOAT32_UNIT_ROUNDOFF * reach**power
