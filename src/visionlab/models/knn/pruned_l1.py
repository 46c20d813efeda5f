"""The L1 route for 8-bit images: pruned by their exact L2 distances.

L1 has no matrix-product form. An 8-bit difference x has |x| >= x^2 / 255, so L1 >= L2^2 / 255: the
exact squared L2 distances (int8 products, or float32 ones where those are faster) rule out every image
that this bound puts beyond a distance the k nearest cannot exceed, and only the rest get their L1
distance computed: on MNIST's nearly black-and-white digits, a small fraction of the training set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from visionlab.models.knn.int8_codes import PixelCodes, square_norms
from visionlab.models.knn.search import CANDIDATE_MARGIN


class PrunedL1(PixelCodes):
    """L1 in exact integers (sums below 2^24 in float32), pruned by L2."""

    distance = "l1"
    stored_as = PixelCodes.stored_as + " (pruned by L2)"

    def scratch_bytes(self, k: int) -> int:
        return self.pruning_scratch_bytes(k)

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest by L1 for one chunk of int8 query codes: float64 distances, indices.

        1. Exact squared L2 distances to every training image; the k + CANDIDATE_MARGIN nearest by
           them get exact L1 distances, and the k-th smallest of those, `reach`, is at least the k-th
           smallest L1 distance of all.
        2. Each of the true k nearest is thus at L1 <= reach, so at L2^2 <= 255 L1 <= 255 reach. The
           images within that bound (all the others are ruled out) get exact L1 distances, which
           decide, the lower training index first at equal distance.
        """
        queries = q.float()
        squares = self._approx(q)
        shortlist = squares.topk(min(k + CANDIDATE_MARGIN, len(squares[0])), dim=1, largest=False).indices
        reach = self._exact_l1(queries, shortlist).kthvalue(k, dim=1).values
        limit = (255 * reach - square_norms(q)).clamp(-(2**31), 2**31 - 1).int()  # in _approx's units
        rows, images = (squares <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        del squares
        return self.nearest_among(queries, rows, images, k, self._exact_l1)

    def _exact_l1(self, queries: Tensor, candidates: Tensor | None) -> Tensor:
        """Exact L1 distances (float64) from float32 codes to their candidates' (None: every image's).
        L1 distances of integer codes are sums of whole numbers below 2^24 in float32: exact."""
        if candidates is None:
            return torch.cdist(queries, self.float_codes(), p=1).double()
        return torch.cdist(queries.unsqueeze(1), self.gathered(candidates), p=1).squeeze(1).double()
