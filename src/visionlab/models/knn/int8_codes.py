"""8-bit images stored as int8 codes: what the three integer routes (`IntegerL2`, `PrunedL2`, `PrunedL1`) share.

L2 and L1 on the datasets' own 8-bit pixels (normalized with one scale for every channel, no `normalize`
or `pca`), on a CPU or a CUDA GPU, are searched in integers: the training set is stored as int8 codes
(pixel - 128: the same differences, in int8's range), and their dot products are exact integers, either
by torch's int8 matrix product (`patches.int8_matmul`: cuBLAS on a GPU, padded to its shapes; VNNI on a
CPU) or by float32 matrix products of at most EXACT_FLOAT32_FEATURES features at a time, which are exact
too. Queries that are not 8-bit images normalized like the training split go to a `FloatSearch` of the
same images in float32.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from visionlab import patches
from visionlab.data import DeviceSplit
from visionlab.models.knn.float_search import FloatSearch
from visionlab.models.knn.search import CANDIDATE_MARGIN, Search, first_k

# Features per float32 matrix product of int8 codes: 1,024 products of at most 128^2 = 2^14 sum to at most 2^24,
# below which float32 holds every integer, so every partial sum is exact.
EXACT_FLOAT32_FEATURES = 1024
# Query-image pairs whose exact distances one batched call computes (a 49 MiB block of gathered MNIST images).
# Batches, not one call per query: under contention every parallel region waits for a descheduled thread.
PAIRS_PER_BATCH = 2**14
# How far a normalized pixel may be from its 8-bit value (after undoing the normalization) and still
# count as that value: float32 normalization is off by about 1e-5; anything else is not an 8-bit image.
ON_LATTICE = 1e-3


def stores_codes(train: DeviceSplit, distance: str, normalize: bool, pca: int | None) -> bool:
    """Whether the exact integer search applies: L2 or L1 on 8-bit pixels, one scale for all channels, CPU
    or CUDA. (L1 distances are summed in float32, exact below 2^24: at most 65,792 features of 255 each.)"""
    features = math.prod(train.images.shape[1:])
    return (
        (distance == "l2" or distance == "l1" and 255 * features < 2**24)
        and not normalize
        and not pca
        and train.images.dtype == torch.uint8
        and train.labels.device.type in ("cpu", "cuda")
        and bool((train.scale == train.scale.flatten()[0]).all())
    )


def pixel_codes(train: DeviceSplit, chunk_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The training images as int8 codes (pixel - 128), their squared norms (int32), and the scale and
    shift (float64) that undo the normalization of queries."""
    # two's complement: u ^ 0x80 = u - 128
    codes = train.images.flatten(1).bitwise_xor(128).view(torch.int8)
    norms = torch.cat([square_norms(part) for part in codes.split(chunk_size)])
    return codes, norms, train.scale.flatten()[0].double(), train.shift.double()


def square_norms(codes: Tensor) -> Tensor:
    """Squared norms `[n]` of int8 rows, exactly, as int32."""
    return codes.int().square().sum(1, dtype=torch.int32)


def int8_products(a: Tensor, b: Tensor) -> Tensor:
    """a @ b.T for int8 rows, exactly, as int32. torch's CPU int8 product has returned wrong sums for
    1-long rows (BENCHMARKS.md, "kNN"), so rows shorter than 8 go by int64."""
    if a.is_cuda:
        return padded_int8_products(a, b)
    if a.shape[1] < 8:
        return (a.long() @ b.long().T).int()
    return patches.int8_matmul(a, b.T)


def padded_int8_products(a: Tensor, b: Tensor) -> Tensor:
    """a @ b.T by cuBLAS's int8 product, which takes only more than 16 rows of `a` and row lengths and
    rows of `b` in multiples of 8: zero rows and features are added where needed (they add nothing to
    any product) and the extra rows and columns are cut off the result."""
    rows, n = len(a), len(b)
    features = -a.shape[1] % 8
    a = F.pad(a, (0, features, 0, max(17 - rows, 0)))
    if features or n % 8:
        b = F.pad(b, (0, features, 0, -n % 8))
    return patches.int8_matmul(a, b.T)[:rows, :n]


class PixelCodes(Search):
    """int8 codes `[n, d]` with their squared norms (int32), and the scale and shift of the normalization.

    Their products with a query's codes go by torch's int8 product where `int8_matmul` (it is fast there:
    a CUDA GPU, a CPU with VNNI), else by float32 products of the codes' float32 copy, made on first need.
    Each route searches a chunk of query codes in `_search`, in pixel units; `nearest` turns the distances
    into the normalized units of the model's inputs.
    """

    distance: ClassVar[str]  # the route's: "l2" (searched as squared distances) or "l1"
    stored_as = "8-bit pixels, searched in exact integer arithmetic"

    def __init__(
        self, codes: Tensor, norms: Tensor, pixel_scale: Tensor, pixel_shift: Tensor, chunk_size: int, int8_matmul: bool
    ):
        super().__init__(codes, chunk_size)
        self.norms = norms
        self.pixel_scale, self.pixel_shift = pixel_scale, pixel_shift
        self.products: Callable[[Tensor], Tensor] = self._int8_products if int8_matmul else self._float32_products
        self._float_codes: Tensor | None = None
        self._in_float: FloatSearch | None = None

    @abstractmethod
    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest for one chunk of int8 query codes: float64 distances in pixel units (squared
        for l2), indices."""

    def nearest(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        codes = self.codes_of(x)
        if codes is None:
            return self.in_float().nearest(x, k)
        found = [self._search(part, k) for part in codes.split(self.chunk_size)]
        distances = torch.cat([d for d, _ in found])
        if self.distance == "l2":
            distances = distances.sqrt()  # searched as squared distances
        distances = distances * self.pixel_scale  # from pixel-value units to normalized ones
        return distances, torch.cat([i for _, i in found])

    def codes_of(self, x: Tensor) -> Tensor | None:
        """Normalized images as the int8 codes of their 8-bit pixels; None if they are not 8-bit
        images normalized like the training split (the dataset's own images always are)."""
        pixels = ((x - self.pixel_shift.float()) / self.pixel_scale.float()).flatten(1)
        rounded = pixels.round()
        if not (rounded.sub_(pixels).abs_().max() <= ON_LATTICE and pixels.min() > -0.5 and pixels.max() < 255.5):
            return None
        return pixels.round_().sub_(128).to(torch.int8)

    def in_float(self) -> FloatSearch:
        """A float32 search of the same images, for queries that are not 8-bit images. Its copy of the
        training images is made on first need and kept (checkpoints hold only the codes)."""
        if self._in_float is None:
            n = len(self.features)
            channels = self.pixel_shift.shape[1]  # the training images exactly as the float search would store them
            pixels = (self.features.float() + 128).view(n, channels, -1)
            features = (pixels * self.pixel_scale.float() + self.pixel_shift.float().view(1, channels, 1)).flatten(1)
            p = {"l1": 1, "l2": 2}[self.distance]
            norms = torch.linalg.vector_norm(features, ord=p, dim=1)
            self._in_float = FloatSearch(features, norms, self.distance, p, self.chunk_size, lambda x: x.flatten(1))
        return self._in_float

    def float_codes(self) -> Tensor:
        """The training codes as float32 (exact: they are small integers), made on first need and kept
        (checkpoints hold only the int8 codes)."""
        if self._float_codes is None:
            self._float_codes = self.features.float()
        return self._float_codes

    def _int8_products(self, q: Tensor) -> Tensor:
        """q @ codes.T for int8 query codes, exactly, as int32, by torch's int8 product."""
        return int8_products(q, self.features)

    def _float32_products(self, q: Tensor) -> Tensor:
        """q @ codes.T for query codes, exactly, as int32: float32 products of at most EXACT_FLOAT32_FEATURES
        features at a time (exact), summed in int32."""
        train, width = self.float_codes(), EXACT_FLOAT32_FEATURES
        return sum((q[:, i : i + width].float() @ train[:, i : i + width].T).int() for i in range(0, q.shape[1], width))

    def _approx(self, q: Tensor) -> Tensor:
        """Exact int32 squared distances `[n, N]` less the query's own squared norm (one number per query,
        so the same order; the routes add it back to the k found): |y|^2 - 2<x, y>."""
        products = self.products(q)
        return torch.sub(self.norms, products, alpha=2, out=products)

    def gathered(self, candidates: Tensor) -> Tensor:
        """The candidates' codes `[B, c, d]` as float32, gathered as int8 rows (a quarter of the memory
        traffic of float32 ones) by index_select, which copies whole rows where advanced indexing goes
        element by element."""
        codes = self.features.index_select(0, candidates.flatten())
        return codes.view(*candidates.shape, -1).float()

    def nearest_among(
        self, queries: Tensor, rows: Tensor, images: Tensor, k: int, exact: Callable[[Tensor, Tensor | None], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """The first k of each query's images by (exact distance, training index); `rows` and `images`
        are (query, image) pairs in query order, at least k per query, and `exact` measures them
        (the pruned routes' exact distances; None: to every image).

        A query with more than a quarter of the training set goes against all of it (cheaper than
        gathering); the others go in batches of similar counts, padded to the batch's largest
        (the padding gets index n and distance inf: it sorts last).
        """
        n = len(self.features)
        counts = torch.bincount(rows, minlength=len(queries))
        starts = counts.cumsum(0) - counts
        distances, indices = queries.new_empty(len(queries), k, dtype=torch.float64), rows.new_empty(len(queries), k)
        many = counts > n // 4
        for row in many.nonzero().flatten().tolist():
            near = images[starts[row] : starts[row] + counts[row]].unsqueeze(0)
            distances[row], indices[row] = (
                found[0] for found in first_k(exact(queries[row : row + 1], None)[:, near[0]], near, k)
            )
        few = (~many).nonzero().flatten()
        if not len(few):
            return distances, indices
        few = few[counts[few].argsort()]
        padded = rows.new_full((len(queries), int(counts[few].max())), n)
        kept = ~many[rows]
        padded[rows[kept], (torch.arange(len(rows), device=rows.device) - starts[rows])[kept]] = images[kept]
        sizes, start = counts[few].tolist(), 0
        while start < len(few):
            end = start + 1
            while end < len(few) and (end + 1 - start) * sizes[end] <= PAIRS_PER_BATCH:
                end += 1
            batch, candidates = few[start:end], padded[few[start:end], : sizes[end - 1]]
            found = exact(queries[batch], candidates.clamp_max(n - 1))
            distances[batch], indices[batch] = first_k(found.masked_fill_(candidates == n, math.inf), candidates, k)
            start = end
        return distances, indices

    def pruning_scratch_bytes(self, k: int) -> int:
        """Search.scratch_bytes for a pruned route, which adds per query the shortlist gathered in float, the
        bound's mask, at worst every image's (row, index) in int64 and a quarter of them padded; and once,
        the codes' float32 copy and one batch of gathered images."""
        n, d = self.features.shape
        m = min(k + CANDIDATE_MARGIN, n)
        return super().scratch_bytes(k) + self.chunk_size * (4 * m * d + 19 * n) + 4 * n * d + 4 * PAIRS_PER_BATCH * d
