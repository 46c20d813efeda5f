"""The pruned L2 route: 8-bit images where their products are float32 matrix products anyway (a CPU without VNNI).

A float32 product of all the codes costs as much as in the float32 route, so L2 is pruned first by a
product over BOUND_DIMENSIONS features: distances between the images' projections on principal axes
bound the true ones from below, and only the images that this bound cannot rule out get their exact
distances. docs/models.md ("kNN") has the argument; BENCHMARKS.md ("kNN") what it saves on MNIST.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from visionlab.models.knn.int8_codes import EXACT_FLOAT32_FEATURES, PixelCodes, square_norms
from visionlab.models.knn.search import CANDIDATE_MARGIN, FLOAT32_UNIT_ROUNDOFF, principal_axes

# The principal axes of the lower bound, and how many training images (evenly spaced) they are fitted on.
BOUND_DIMENSIONS = 64
BOUND_FIT_IMAGES = 10_000


class L2Bound(NamedTuple):
    """Principal axes (float64 `[d, r]`, orthonormal), the mean they are centered on, the training
    codes' projections as the terms of one matrix product that gives the squared distances with the
    norms folded in (float32 `[n, r + 2]`: y, 1, |y|^2, against the query's -2x, |x|^2, 1), and the
    longest projection's length: the pruned L2 search's lower bound."""

    axes: Tensor
    mean: Tensor
    train_terms: Tensor
    train_reach: Tensor

    def slack(self, projected: Tensor) -> Tensor:
        """Per query, how far above the true projected squared distance a float32 bound can be.

        The projections are float64 products rounded to float32 (a relative error of one unit roundoff
        each); the two squared norms are float32 sums of r terms, and the product sums r + 2 terms
        whose magnitudes add up to at most (|x| + |y|)^2: together at most (2r + 5) unit roundoffs
        times (|x| + |y|)^2 (Higham, ch. 3), doubled for safety as in `FloatSearch._rounding_bound`.
        The 1 covers the axes being orthonormal only to float64's precision: a relative 1e-14 of
        squared distances of 8-bit images (below 2^16 per feature), which are whole numbers.
        """
        reach = torch.linalg.vector_norm(projected.double(), dim=1) + self.train_reach
        return 2 * (2 * self.axes.shape[1] + 5) * FLOAT32_UNIT_ROUNDOFF * reach**2 + 1


class PrunedL2(PixelCodes):
    """L2 in exact integers from float32 products, pruned by a principal-axis bound."""

    distance = "l2"

    def __init__(self, codes: Tensor, norms: Tensor, pixel_scale: Tensor, pixel_shift: Tensor, chunk_size: int):
        super().__init__(codes, norms, pixel_scale, pixel_shift, chunk_size, int8_matmul=False)
        self._bound: L2Bound | None = None

    def scratch_bytes(self, k: int) -> int:
        """A pruned route's, plus the training codes' projections."""
        return self.pruning_scratch_bytes(k) + 4 * len(self.features) * BOUND_DIMENSIONS

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest by L2 for one chunk of int8 query codes: float64 squared distances, indices.

        1. A lower bound on every squared distance: the squared distance between the two images'
           projections on BOUND_DIMENSIONS principal axes (projecting onto orthonormal axes never
           lengthens a vector), one matrix product 12x smaller than the full one on MNIST, less a
           bound on its float32 rounding (`L2Bound.slack`).
        2. The k + CANDIDATE_MARGIN nearest by that bound get exact distances; the k-th smallest of
           those, `reach`, is at least the k-th smallest distance of all.
        3. Every image whose bound is within reach gets its exact distance (the others are farther
           than the k-th nearest); those decide, the lower training index first at equal distance.
        """
        bound, queries, norms = self.bound(), q.float(), square_norms(q).double()
        projected = ((q.double() - bound.mean) @ bound.axes).float()
        ones = projected.new_ones(len(q), 1)
        # |x|^2 + |y|^2 - 2<x, y>
        lower = torch.cat([-2 * projected, projected.square().sum(1, keepdim=True), ones], 1) @ bound.train_terms.T
        shortlist = lower.topk(min(k + CANDIDATE_MARGIN, len(bound.train_terms)), dim=1, largest=False).indices
        reach = self._exact_l2(queries, shortlist).kthvalue(k, dim=1).values + norms
        limit = torch.nextafter((reach + bound.slack(projected)).float(), torch.tensor(math.inf))  # rounded up
        rows, images = (lower <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        del lower
        distances, indices = self.nearest_among(queries, rows, images, k, self._exact_l2)
        return distances + norms.unsqueeze(1), indices

    def bound(self) -> L2Bound:
        """The training codes' projections on their principal axes, made on first need and kept
        (checkpoints hold only the codes). The axes come from at most BOUND_FIT_IMAGES evenly spaced
        images: any orthonormal axes give a valid bound, these a tight one."""
        if self._bound is None:
            codes = self.float_codes()
            sample = codes[:: max(1, len(codes) // BOUND_FIT_IMAGES)].double()
            mean = sample.mean(0)
            # orthonormal to float64's precision
            axes = principal_axes([sample - mean], min(BOUND_DIMENSIONS, codes.shape[1]), torch.float64)
            train = torch.cat([((part.double() - mean) @ axes).float() for part in codes.split(self.chunk_size)])
            terms = torch.cat([train, train.new_ones(len(train), 1), train.square().sum(1, keepdim=True)], 1)
            self._bound = L2Bound(axes, mean, terms, torch.linalg.vector_norm(train.double(), dim=1).max())
        return self._bound

    def _exact_l2(self, queries: Tensor, candidates: Tensor | None) -> Tensor:
        """Exact squared L2 distances less the query's squared norm (`_approx`'s units, float64) from
        float32 codes to their candidates' (None: every image's), from exact products as `_approx`'s."""
        if candidates is None:
            return self._approx(queries).double()
        train, width = self.gathered(candidates), EXACT_FLOAT32_FEATURES
        products = sum(
            torch.bmm(train[..., i : i + width], queries[:, i : i + width, None]).squeeze(2).int()
            for i in range(0, queries.shape[1], width)
        )
        return (self.norms[candidates] - 2 * products).double()
