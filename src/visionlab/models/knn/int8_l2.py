"""The integer L2 route: 8-bit images by torch's int8 matrix product, where it is fast (a CUDA GPU, a CPU with VNNI).

Squared L2 distances are |x|^2 + |y|^2 - 2<x, y> of the int8 codes, exact integers: one int8 matrix product
per chunk, and `topk` puts them in order; nothing needs re-checking, and only a tie at the k-th that runs
past the candidates kept sends a query back to the whole training set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from visionlab.models.knn.int8_codes import PixelCodes, square_norms
from visionlab.models.knn.search import CANDIDATE_MARGIN, first_k, ranked


class IntegerL2(PixelCodes):
    """L2 in exact integers, by int8 products."""

    distance = "l2"

    def __init__(self, codes: Tensor, norms: Tensor, pixel_scale: Tensor, pixel_shift: Tensor, chunk_size: int):
        super().__init__(codes, norms, pixel_scale, pixel_shift, chunk_size, int8_matmul=True)

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest for one chunk of int8 query codes: float64 squared distances, indices.

        1. Exact distances (less the query's squared norm) to every training image; topk keeps
           k + CANDIDATE_MARGIN candidates, which are only put in order.
        2. Where the k-th ties with the last candidate, images left out may tie with it too: every
           image at most that far is ranked, the lower training index first.
        """
        train = self.features
        m = min(k + CANDIDATE_MARGIN, len(train))
        values, candidates = self._approx(q).topk(m, dim=1, largest=False)
        settled = values[:, k] - values[:, k - 1] > 0 if m > k else q.new_ones(len(q), dtype=torch.bool)
        distances, indices = first_k(values.double(), candidates, k)
        if m < len(train):  # every image left out has distance >= values[:, -1]
            for row in (~settled & (distances[:, k - 1] >= values[:, -1])).nonzero().flatten().tolist():
                near = (self._approx(q[row : row + 1])[0].double() <= distances[row, k - 1]).nonzero()
                distances[row], indices[row] = ranked(self._exact, q[row : row + 1], train, near.T, k, self.chunk_size)
        return distances + square_norms(q).unsqueeze(1), indices

    @staticmethod
    def _exact(a: Tensor, b: Tensor) -> Tensor:
        """Squared distances less a's squared norm (`_approx`'s units, float64) between paired rows of codes."""
        a, b = a.int(), b.int()
        return ((a - b).square().sum(-1) - a.square().sum(-1)).double()
