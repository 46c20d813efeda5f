"""k-nearest neighbours: the training split is the model; a query takes the vote of its k closest images.

There is nothing to learn, so `fit` only stores the training images (as buffers, after the optional
per-pixel standardization and PCA, both fitted on the training split alone) and `forward` returns
`[N, C]` vote shares like any other model's class scores.

The search is exact brute force on the device, a chunk of `chunk_size` queries at a time.

On a CPU or a CUDA GPU, L2 and L1 on 8-bit images (the datasets' own pixels, normalized with one scale for every
channel, no `normalize` or `pca`) are searched in integers: the training set is stored as int8 codes
(pixel - 128), and their dot products are exact integers: `torch._int_mm` on a GPU (cuBLAS, padded to
its shapes) and where the CPU has VNNI (5x faster than a float32 matrix product there), else a float32 matrix product,
which is exact for products of int8 codes summed over at most 1,024 features (every partial sum stays below 2^24).
Squared L2 distances are then exact integers, so nothing needs re-checking. Where those products are
float32 ones (no VNNI), L2 is pruned first by a 64-feature product: distances between the images'
projections on principal axes bound the true ones from below (see `_search_l2_pruned`). L1 has no matrix-product
form; it is pruned by the L2 one: an 8-bit difference x has |x| >= x^2 / 255, so L1 >= L2^2 / 255,
and only the images that this bound cannot rule out get their L1 distance computed (see `_search_l1`):
on MNIST's nearly black-and-white digits, a small fraction of the training set.

Otherwise distances are float32: distances to every training image (one matrix product for L2
and cosine, `torch.cdist` for L1/Lp) and `topk` for a few candidates more than k. float32 rounding
could swap near-equal distances, so the neighbours' distances are recomputed in float64, and a
proven bound on the rounding (see `_rounding_bound`) says when the float32 shortlist is enough;
when it is not (near ties, duplicated images) more images are recomputed until it is. The answer is therefore what a
float64 brute force gives, with ties settled as scikit-learn's brute force settles them:

- neighbours at equal distance: the lower training index comes first;
- classes with equal votes: the lowest class index wins (`argmax` returns the first maximum).

One search serves several k: the neighbours for the largest k, in that order, hold those of every
smaller k, so `scores_by_k` scores a whole list of k for the price of one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionlab.checks import Each, Either, Maybe, OneOf, Switch, Whole
from visionlab.data import DeviceSplit
from visionlab.errors import UserError

log = logging.getLogger(__name__)

DISTANCES = ("l2", "l1", "lp", "cosine")
WEIGHTS = ("uniform", "distance")
# float32 candidates per query beyond k, re-ranked in float64. On MNIST (k=3, 2,000 test images) a
# margin of 2 sent 0.8% of rows to the slower fallback, 4 and 8 none; 8 leaves room for harder data.
CANDIDATE_MARGIN = 8
FLOAT32_UNIT_ROUNDOFF = 2.0**-24
# Features per float32 matrix product of int8 codes: 1,024 products of at most 128^2 = 2^14 sum to at most 2^24,
# below which float32 holds every integer, so every partial sum is exact.
EXACT_FLOAT32_FEATURES = 1024
# Query-image pairs whose exact distances one batched call computes (a 49 MiB block of gathered MNIST images).
# Batches, not one call per query: under contention every parallel region waits for a descheduled thread.
PAIRS_PER_BATCH = 2**14
# The principal axes of the lower bound that prunes the L2 search on CPUs without VNNI, and how many
# training images (evenly spaced) they are fitted on.
BOUND_DIMENSIONS = 64
BOUND_FIT_IMAGES = 10_000
# How far a normalized pixel may be from its 8-bit value (after undoing the normalization) and still
# count as that value: float32 normalization is off by about 1e-5; anything else is not an 8-bit image.
ON_LATTICE = 1e-3
# Whether torch._int_mm is the fast route to int8 dot products. Without VNNI, torch 2.14's CPU `_int_mm`
# is a plain loop, far slower than a float32 matrix product of the same size.
INT_MM_IS_FAST = torch.cpu._is_vnni_supported()


def _sorted_ks(k) -> tuple[int, ...]:
    """model.k as a sorted tuple of distinct values (one number or a list such as Hydra's ListConfig)."""
    return tuple(sorted(set(k))) if isinstance(k, Sequence) else (k,)


class KNN(nn.Module):
    """k-nearest-neighbour classifier. Holds the training set as buffers and has no parameters.

    k: one number, or a list scored in one search (the training loop keeps the best on val).
    distance: l2 (Euclidean), l1 (Manhattan), cosine (1 - cosine similarity) or lp with `p` >= 1.
    weights: uniform (one vote each) or distance (1 / distance; neighbours at distance 0, if any,
        take all the vote, as in scikit-learn).
    chunk_size: queries per distance block; search scratch memory grows linearly with it.
    normalize: standardize each pixel with the training split's mean and std (std 0: only centered).
    pca: project onto this many principal axes of the training split (after `normalize`); None: off.
    """

    memorizes = True  # it learns by storing the train split (training/learners/memorizing.py), not by gradient

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        k: Annotated[int | Sequence[int], Either(Whole(1), Each(Whole(1), example="[1, 3, 5]"))] = 1,
        distance: Annotated[str, OneOf(*DISTANCES)] = "l2",
        p: float | None = None,
        weights: Annotated[str, OneOf(*WEIGHTS)] = "uniform",
        chunk_size: Annotated[int, Whole(1, unit="queries")] = 512,
        normalize: Annotated[bool, Switch()] = False,
        pca: Annotated[int | None, Maybe(Whole(1, unit="dimensions"))] = None,
    ):
        super().__init__()
        self.ks = _sorted_ks(k)
        self.k = self.ks[0]  # the k that forward() votes with; the training loop sets the best one on val
        if distance == "lp":
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p < math.inf:
                shown = "null" if p is None else repr(p)
                raise UserError(
                    f"model.p={shown} is invalid for model.distance=lp: use a number of at least 1, such as 3"
                )
            distance = {1: "l1", 2: "l2"}.get(p, "lp")  # the exact same distances, by the faster route
        elif p is not None:
            raise UserError(
                f"model.p={p!r} is only used with model.distance=lp: set model.distance=lp or leave model.p null"
            )
        pixels = math.prod(in_shape)
        if pca is not None and pca > pixels:
            raise UserError(
                f"model.pca={pca!r} is invalid: use null (off) or a whole number of dimensions from 1 to {pixels}"
            )
        self.distance = distance
        self.p = {"l1": 1, "l2": 2, "cosine": 2}.get(distance, p)  # the norm used for the rounding bound
        self.weights = weights
        self.chunk_size = chunk_size
        self.normalize = normalize
        self.pca = pca
        self.num_classes = num_classes
        # Filled by fit(); None buffers stay out of state_dict until then. With the 8-bit search,
        # train_features holds int8 codes, train_norms their squared norms (int32), and
        # pixel_scale/pixel_shift undo the normalization of queries.
        for name in (
            "mean",
            "scale",
            "components",
            "train_features",
            "train_norms",
            "train_labels",
            "pixel_scale",
            "pixel_shift",
        ):
            self.register_buffer(name, None)
        self._float_features: Tensor | None = None  # for queries that are not 8-bit images (see neighbours)
        # the int8 codes as float32, for float products and L1 (see _codes_in_float)
        self._float_codes: Tensor | None = None
        self._bound: _L2Bound | None = None  # the pruned L2 search's projections (see _l2_bound)

    # ---- memorizing ---------------------------------------------------------------------------

    def fit(self, train: DeviceSplit) -> None:
        """Store the training split, after the preprocessing fitted on it (and on nothing else).

        One float32 copy of the training images is made, filled chunk by chunk and transformed in
        place, so memorizing needs no second copy of the training set (PCA adds its smaller result).
        The integer search stores one int8 copy instead.
        """
        n = len(train)
        if self.ks[-1] > n:
            raise UserError(
                f"model.k={self.ks[-1]} is more than the {n:,} training images: use values of k from 1 to {n}"
            )
        self.mean = self.scale = self.components = self.pixel_scale = self.pixel_shift = self._float_features = (
            self._float_codes
        ) = self._bound = None  # a second fit starts afresh
        self.train_labels = train.labels
        if self._searches_bytes(train):
            self._memorize_bytes(train)
            return
        pixels = torch.empty(n, math.prod(train.images.shape[1:]), device=train.labels.device)
        rows = list(zip(pixels.split(self.chunk_size), torch.arange(n, device=pixels.device).split(self.chunk_size)))
        for part, index in rows:
            part.copy_(train.batch(index)[0].flatten(1))
        if self.normalize or self.pca:
            std, mean = torch.std_mean(pixels, dim=0, correction=0)
            self.mean = mean
            if self.normalize:
                self.scale = torch.where(std > 0, std, torch.ones_like(std))  # as scikit-learn's StandardScaler
            if self.pca:
                self.components = principal_axes((self._preprocess(part) for part, _ in rows), self.pca)
        if self.components is None:
            for part, _ in rows:
                part.copy_(self._features(part))
            self.train_features = pixels
        else:
            self.train_features = torch.cat([self._features(part) for part, _ in rows])
        del pixels, rows
        self.train_norms = torch.linalg.vector_norm(self.train_features, ord=self.p, dim=1)
        self._log_memory("float32 features")

    def _searches_bytes(self, train: DeviceSplit) -> bool:
        """Whether the exact integer search applies: L2 or L1 on 8-bit pixels, one scale for all channels, CPU.
        (L1 distances are summed in float32, exact below 2^24: at most 65,792 features of 255 each.)"""
        features = math.prod(train.images.shape[1:])
        return (
            (self.distance == "l2" or self.distance == "l1" and 255 * features < 2**24)
            and not self.normalize
            and not self.pca
            and train.images.dtype == torch.uint8
            and train.labels.device.type in ("cpu", "cuda")
            and bool((train.scale == train.scale.flatten()[0]).all())
        )

    def _memorize_bytes(self, train: DeviceSplit) -> None:
        """Store int8 codes (pixel - 128: the same differences, in int8's range) and their squared norms."""
        self.pixel_scale, self.pixel_shift = train.scale.flatten()[0].double(), train.shift.double()
        # two's complement: u ^ 0x80 = u - 128
        self.train_features = train.images.flatten(1).bitwise_xor(128).view(torch.int8)
        self.train_norms = torch.cat([_square_norms(part) for part in self.train_features.split(self.chunk_size)])
        self._log_memory(
            f"8-bit pixels, searched in exact integer arithmetic{' (pruned by L2)' * (self.distance == 'l1')}"
        )

    def _log_memory(self, stored_as: str) -> None:
        n, n_features = self.train_features.shape
        log.info(
            "kNN: memorized %s training images as %d %s (%.0f MiB); searching %d queries at a time "
            "takes at most %.0f MiB of scratch memory (model.chunk_size sets it)",
            f"{n:,}",
            n_features,
            stored_as,
            self.train_features.nbytes / 2**20,
            self.chunk_size,
            self.scratch_bytes() / 2**20,
        )

    # ---- checkpoints: the memorized split and the chosen k travel in the state dict --------------

    def get_extra_state(self) -> dict[str, int]:
        return {"k": self.k}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.k = state["k"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Buffers are None until fit(); give each one a tensor of the stored shape to load into."""
        for name, buffer in self._buffers.items():
            if buffer is None and prefix + name in state_dict:
                self._buffers[name] = torch.empty_like(state_dict[prefix + name])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def scratch_bytes(self) -> int:
        """An upper bound on the memory a search allocates besides the stored training set.

        Per query in a chunk: its float32 distances to all n training images (4n), its candidates'
        indices and float64 distances while they are sorted (64 per candidate), its preprocessed and
        float64 copies (32 per feature); plus topk's per-thread row buffer (16n) and the float32 copy of
        the int8 codes where one is used. The exact distances are computed in pieces no larger than
        the float32 block, after that block is freed.
        """
        n, d = self.train_features.shape
        m = min(self.ks[-1] + CANDIDATE_MARGIN, n)
        per_query = 4 * n + 64 * m + 32 * d
        float_codes = 4 * n * d if self._uses_float_codes() else 0
        if self.distance == "l1" and self.pixel_scale is not None or self._prunes_l2():
            # the shortlist gathered in float, the bound's mask, at worst every image's (row, index) in int64
            # and a quarter of them padded; one batch of gathered images; L2's projections of the training set
            per_query += 4 * m * d + 19 * n
            float_codes += 4 * PAIRS_PER_BATCH * d + 4 * n * BOUND_DIMENSIONS * self._prunes_l2()
        return self.chunk_size * per_query + 16 * n * torch.get_num_threads() + float_codes

    def _features(self, x: Tensor) -> Tensor:
        """Images -> the vectors distances are measured between (float32 `[N, d]`)."""
        x = self._preprocess(x.flatten(1))
        if self.distance == "cosine":
            x = F.normalize(x, dim=1)  # a zero vector stays zero: distance 1 to everything, as in scikit-learn
        return x

    def _preprocess(self, x: Tensor) -> Tensor:
        """The fitted standardization and PCA, whichever are on (and fitted so far)."""
        if self.mean is not None:
            x = x - self.mean
        if self.scale is not None:
            x = x / self.scale
        if self.components is not None:
            x = x @ self.components
        return x

    # ---- searching and voting -----------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        return self.vote(*self.neighbours(x, self.k), (self.k,))[:, 0]

    def scores_by_k(self, x: Tensor) -> dict[int, Tensor]:
        """Vote shares `[N, C]` for every k in `ks`, from a single search for the largest."""
        return dict(zip(self.ks, self.vote(*self.neighbours(x, self.ks[-1]), self.ks).unbind(1)))

    def neighbours(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k nearest training images of each query: distances `[N, k]` (float64, ascending) and
        training indices `[N, k]`; at equal distance the lower training index comes first."""
        if self.train_features is None:
            raise RuntimeError("KNN has not memorized a training split yet: call fit(train) first")
        if self.pixel_scale is not None:
            codes = self._codes(x)
            if codes is None:
                return self._searcher_in_float().neighbours(x, k)
            search = (
                self._search_l1
                if self.distance == "l1"
                else self._search_l2_pruned
                if self._prunes_l2()
                else self._search
            )
            found = [search(part, k) for part in codes.split(self.chunk_size)]
        else:
            found = [self._search(self._features(part), k) for part in x.split(self.chunk_size)]
        distances = torch.cat([d for d, _ in found])
        if self.distance == "l2":
            distances = distances.sqrt()  # searched as squared distances
        if self.pixel_scale is not None:
            distances = distances * self.pixel_scale  # from pixel-value units to normalized ones
        return distances, torch.cat([i for _, i in found])

    def _codes(self, x: Tensor) -> Tensor | None:
        """Normalized images as the int8 codes of their 8-bit pixels; None if they are not 8-bit
        images normalized like the training split (the dataset's own images always are)."""
        pixels = ((x - self.pixel_shift.float()) / self.pixel_scale.float()).flatten(1)
        rounded = pixels.round()
        if not (rounded.sub_(pixels).abs_().max() <= ON_LATTICE and pixels.min() > -0.5 and pixels.max() < 255.5):
            return None
        return pixels.round_().sub_(128).to(torch.int8)

    def _searcher_in_float(self) -> KNN:
        """A float32 twin of this model, for queries that are not 8-bit images. Its copy of the training
        images is made on first need and kept (a plain attribute: checkpoints hold only the codes)."""
        n, d = self.train_features.shape
        if self._float_features is None:
            channels = self.pixel_shift.shape[1]  # the training images exactly as the float search would store them
            pixels = (self.train_features.float() + 128).view(n, channels, -1)
            self._float_features = (
                pixels * self.pixel_scale.float() + self.pixel_shift.float().view(1, channels, 1)
            ).flatten(1)
        twin = KNN((d,), self.num_classes, self.ks, self.distance, None, self.weights, self.chunk_size)
        twin.train_features, twin.train_labels = self._float_features, self.train_labels
        twin.train_norms = torch.linalg.vector_norm(self._float_features, ord=self.p, dim=1)
        return twin

    def _prunes_l2(self) -> bool:
        return self.distance == "l2" and self.pixel_scale is not None and not self._int_mm_is_fast()

    def _uses_float_codes(self) -> bool:
        return self.pixel_scale is not None and (self.distance == "l1" or not self._int_mm_is_fast())

    def _int_mm_is_fast(self) -> bool:
        return self.train_features.is_cuda or INT_MM_IS_FAST

    def _codes_in_float(self) -> Tensor:
        """The training codes as float32 (exact: they are small integers), made on first need and kept
        (a plain attribute: checkpoints hold only the int8 codes)."""
        if self._float_codes is None:
            self._float_codes = self.train_features.float()
        return self._float_codes

    def _code_products(self, q: Tensor) -> Tensor:
        """q @ train.T for int8 codes, exactly, as int32: `_int_mm` with VNNI, else float32 products of
        at most EXACT_FLOAT32_FEATURES features at a time (exact), summed in int32."""
        if not self._int_mm_is_fast():
            train, width = self._codes_in_float(), EXACT_FLOAT32_FEATURES
            return sum(
                (q[:, i : i + width].float() @ train[:, i : i + width].T).int() for i in range(0, q.shape[1], width)
            )
        return _int8_products(q, self.train_features)

    def _search_l1(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
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
        limit = (255 * reach - _square_norms(q)).clamp(-(2**31), 2**31 - 1).int()  # in _approx's units
        rows, images = (squares <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        del squares
        return self._nearest(queries, rows, images, k, self._exact_l1)

    def _search_l2_pruned(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest by L2 for one chunk of int8 query codes where their products are float32
        matrix products anyway (a CPU without VNNI): float64 squared distances, indices.

        1. A lower bound on every squared distance: the squared distance between the two images'
           projections on BOUND_DIMENSIONS principal axes (projecting onto orthonormal axes never
           lengthens a vector), one matrix product 12x smaller than the full one on MNIST, less a
           bound on its float32 rounding (`_L2Bound.slack`).
        2. The k + CANDIDATE_MARGIN nearest by that bound get exact distances; the k-th smallest of
           those, `reach`, is at least the k-th smallest distance of all.
        3. Every image whose bound is within reach gets its exact distance (the others are farther
           than the k-th nearest); those decide, the lower training index first at equal distance.
        """
        bound, queries, norms = self._l2_bound(), q.float(), _square_norms(q).double()
        projected = ((q.double() - bound.mean) @ bound.axes).float()
        ones = projected.new_ones(len(q), 1)
        # |x|^2 + |y|^2 - 2<x, y>
        lower = torch.cat([-2 * projected, projected.square().sum(1, keepdim=True), ones], 1) @ bound.train_terms.T
        shortlist = lower.topk(min(k + CANDIDATE_MARGIN, len(bound.train_terms)), dim=1, largest=False).indices
        reach = self._exact_l2(queries, shortlist).kthvalue(k, dim=1).values + norms
        limit = torch.nextafter((reach + bound.slack(projected)).float(), torch.tensor(math.inf))  # rounded up
        rows, images = (lower <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        del lower
        distances, indices = self._nearest(queries, rows, images, k, self._exact_l2)
        return distances + norms.unsqueeze(1), indices

    def _l2_bound(self) -> _L2Bound:
        """The training codes' projections on their principal axes, made on first need and kept (a plain
        attribute: checkpoints hold only the codes). The axes come from at most BOUND_FIT_IMAGES
        evenly spaced images: any orthonormal axes give a valid bound, these a tight one."""
        if self._bound is None:
            codes = self._codes_in_float()
            sample = codes[:: max(1, len(codes) // BOUND_FIT_IMAGES)].double()
            mean = sample.mean(0)
            # orthonormal to float64's precision
            axes = principal_axes([sample - mean], min(BOUND_DIMENSIONS, codes.shape[1]), torch.float64)
            train = torch.cat([((part.double() - mean) @ axes).float() for part in codes.split(self.chunk_size)])
            terms = torch.cat([train, train.new_ones(len(train), 1), train.square().sum(1, keepdim=True)], 1)
            self._bound = _L2Bound(axes, mean, terms, torch.linalg.vector_norm(train.double(), dim=1).max())
        return self._bound

    def _exact_l1(self, queries: Tensor, candidates: Tensor | None) -> Tensor:
        """Exact L1 distances (float64) from float32 codes to their candidates' (None: every image's).
        L1 distances of integer codes are sums of whole numbers below 2^24 in float32: exact."""
        if candidates is None:
            return torch.cdist(queries, self._codes_in_float(), p=1).double()
        return torch.cdist(queries.unsqueeze(1), self._gathered(candidates), p=1).squeeze(1).double()

    def _exact_l2(self, queries: Tensor, candidates: Tensor | None) -> Tensor:
        """Exact squared L2 distances less the query's squared norm (`_approx`'s units, float64) from
        float32 codes to their candidates' (None: every image's), from exact products as `_code_products`."""
        if candidates is None:
            return self._approx(queries).double()
        train, width = self._gathered(candidates), EXACT_FLOAT32_FEATURES
        products = sum(
            torch.bmm(train[..., i : i + width], queries[:, i : i + width, None]).squeeze(2).int()
            for i in range(0, queries.shape[1], width)
        )
        return (self.train_norms[candidates] - 2 * products).double()

    def _gathered(self, candidates: Tensor) -> Tensor:
        """The candidates' codes `[B, c, d]` as float32: gathered as int8 rows (a quarter of the memory
        traffic of float32 ones) by index_select: float32 rows by advanced indexing took 6x longer
        (a profile of 4,096 MNIST queries)."""
        codes = self.train_features.index_select(0, candidates.flatten())
        return codes.view(*candidates.shape, -1).float()

    def _nearest(
        self, queries: Tensor, rows: Tensor, images: Tensor, k: int, exact: Callable[[Tensor, Tensor | None], Tensor]
    ) -> tuple[Tensor, Tensor]:
        """The first k of each query's images by (exact distance, training index); `rows` and `images`
        are (query, image) pairs in query order, at least k per query, and `exact` measures them
        (`_exact_l1`, `_exact_l2`).

        A query with more than a quarter of the training set goes against all of it (cheaper than
        gathering); the others go in batches of similar counts, padded to the batch's largest
        (the padding gets index n and distance inf: it sorts last).
        """
        n = len(self.train_features)
        counts = torch.bincount(rows, minlength=len(queries))
        starts = counts.cumsum(0) - counts
        distances, indices = queries.new_empty(len(queries), k, dtype=torch.float64), rows.new_empty(len(queries), k)
        many = counts > n // 4
        for row in many.nonzero().flatten().tolist():
            near = images[starts[row] : starts[row] + counts[row]].unsqueeze(0)
            distances[row], indices[row] = (
                found[0] for found in _first_k(exact(queries[row : row + 1], None)[:, near[0]], near, k)
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
            distances[batch], indices[batch] = _first_k(found.masked_fill_(candidates == n, math.inf), candidates, k)
            start = end
        return distances, indices

    def vote(self, distances: Tensor, indices: Tensor, ks: Sequence[int]) -> Tensor:
        """Vote shares `[N, len(ks), C]`: for each k, the first k neighbours' votes, summing to 1.

        One running tally over the neighbours, nearest first, serves every k at once.
        """
        one_hot = F.one_hot(self.train_labels[indices], self.num_classes).double()
        if self.weights == "uniform":
            tally = one_hot.cumsum(1)
        else:  # 1 / distance, unless some of the first k are at distance 0: then those take the whole vote
            at_zero = distances == 0
            inverse = (one_hot * torch.where(at_zero, 0.0, 1 / distances).unsqueeze(2)).cumsum(1)
            exact_matches = (one_hot * at_zero.unsqueeze(2)).cumsum(1)
            tally = torch.where(exact_matches.sum(2, keepdim=True) > 0, exact_matches, inverse)
        tally = tally[:, [k - 1 for k in ks]]
        return (tally / tally.sum(2, keepdim=True)).float()

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest for one chunk of query features: float64 distances (squared for l2), indices.

        1. float32 distances to every training image; topk keeps k + CANDIDATE_MARGIN candidates.
           (The integer search's distances are exact: its candidates are only put in order.)
           Where the float32 gap after the k-th is wider than twice the rounding bound, those k are
           the k nearest as a set, and only their distances are recomputed, to order them.
        2. Elsewhere (a near tie at the k-th) all candidates are recomputed; that is final when the
           k-th is closer than any image left out can be, even after rounding.
        3. Otherwise (many near-equal distances, duplicated images) every image that the rounding
           bound cannot rule out is recomputed.
        The float32 block (chunk x n_train) is the largest allocation and is freed before step 1's
        recomputing, which goes in pieces no larger than it.
        """
        train = self.train_features
        m = min(k + CANDIDATE_MARGIN, len(train))
        values, candidates = self._approx(q).topk(m, dim=1, largest=False)
        slack = self._rounding_bound(q)
        settled = values[:, k] - values[:, k - 1] > 2 * slack if m > k else torch.ones_like(slack, dtype=torch.bool)
        if self.pixel_scale is not None:
            distances, indices = _first_k(values.double(), candidates, k)
        else:
            distances, indices = slack.new_empty(len(q), k), candidates.new_empty(len(q), k)
            for rows, width in ((settled, k), (~settled, m)):
                if rows.any():
                    distances[rows], indices[rows] = self._rank(q[rows], candidates[rows, :width], k)
        if m < len(train):  # every image left out has float32 distance >= values[:, -1]
            for row in (~settled & (distances[:, k - 1] >= values[:, -1] - slack)).nonzero().flatten().tolist():
                near = (self._approx(q[row : row + 1])[0].double() <= distances[row, k - 1] + slack[row]).nonzero()
                distances[row], indices[row] = self._rank(q[row : row + 1], near.T, k)
        if self.pixel_scale is not None:
            distances += _square_norms(q).unsqueeze(1)
        return distances, indices

    def _rank(self, q: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The first k of each row's candidates by (exact float64 distance, training index)."""
        n, width = candidates.shape
        queries, images = torch.arange(n, device=q.device).repeat_interleave(width), candidates.flatten()
        piece = max(1, self.chunk_size * len(self.train_features) // (10 * q.shape[1]))  # ~40 bytes per element
        exact = torch.cat(
            [self._exact(q[a], self.train_features[b]) for a, b in zip(queries.split(piece), images.split(piece))]
        )
        return _first_k(exact.view(n, width), candidates, k)

    def _approx(self, q: Tensor) -> Tensor:
        """float32 distances `[n, N]` from each query to every training image (squared for l2).

        The integer search's are exact int32 squared distances less the query's own squared norm
        (one number per query, so the same order; `_search` adds it back to the k found).
        """
        train = self.train_features
        if self.pixel_scale is not None:  # |y|^2 - 2<x, y> in int8 codes
            products = self._code_products(q)
            return torch.sub(self.train_norms, products, alpha=2, out=products)
        if self.distance == "l2":  # |x|^2 + |y|^2 - 2<x, y>: one matrix product
            return torch.addmm(self.train_norms.square(), q, train.T, alpha=-2).add_(q.square().sum(1, keepdim=True))
        if self.distance == "cosine":  # 1 - <x, y> of unit vectors
            return torch.addmm(q.new_ones(()), q, train.T, alpha=-1)
        return torch.cdist(q, train, p=self.p)

    def _exact(self, a: Tensor, b: Tensor) -> Tensor:
        """float64 distances between paired rows of a and b, in the units of `_approx`.

        In place on a's float64 copy, which promotes b's float32 values exactly, element by element.
        """
        if self.pixel_scale is not None:
            a, b = a.int(), b.int()
            return ((a - b).square().sum(-1) - a.square().sum(-1)).double()
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
        The integer search has no rounding: its bound is 0.
        """
        if self.pixel_scale is not None:
            return q.new_zeros(len(q), dtype=torch.float64)
        reach = torch.linalg.vector_norm(q.double(), ord=self.p, dim=1) + self.train_norms.max().double()
        power = 2 if self.distance in ("l2", "cosine") else 1
        return 2 * (q.shape[1] + 2 * self.p + 4) * FLOAT32_UNIT_ROUNDOFF * reach**power


class _L2Bound(NamedTuple):
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
        times (|x| + |y|)^2 (Higham, ch. 3), doubled for safety as in `_rounding_bound`. The
        1 covers the axes being orthonormal only to float64's precision: a relative 1e-14 of squared
        distances of 8-bit images (below 2^16 per feature), which are whole numbers.
        """
        reach = torch.linalg.vector_norm(projected.double(), dim=1) + self.train_reach
        return 2 * (2 * self.axes.shape[1] + 5) * FLOAT32_UNIT_ROUNDOFF * reach**2 + 1


def _first_k(distances: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first k of each row's candidates by (distance, training index)."""
    candidates, by_index = candidates.sort(dim=1)  # index order, so the stable sort keeps lower indices first
    distances, order = distances.gather(1, by_index).sort(dim=1, stable=True)
    return distances[:, :k], candidates.gather(1, order[:, :k])


def _square_norms(codes: Tensor) -> Tensor:
    """Squared norms `[n]` of int8 rows, exactly, as int32."""
    return codes.int().square().sum(1, dtype=torch.int32)


def _int8_products(a: Tensor, b: Tensor) -> Tensor:
    """a @ b.T for int8 rows, exactly, as int32. torch 2.14's CPU `_int_mm` returns garbage for
    1-long rows (found by a fuzz over shapes; every length from 2 up was exact), so those go by int64."""
    if a.is_cuda:
        return _padded_int8_products(a, b)
    if a.shape[1] < 8:
        return (a.long() @ b.long().T).int()
    return torch._int_mm(a, b.T)


def _padded_int8_products(a: Tensor, b: Tensor) -> Tensor:
    """a @ b.T by cuBLAS's int8 product, which takes only more than 16 rows of `a` and row lengths and
    rows of `b` in multiples of 8: zero rows and features are added where needed (they add nothing to
    any product) and the extra rows and columns are cut off the result."""
    rows, n = len(a), len(b)
    features = -a.shape[1] % 8
    a = F.pad(a, (0, features, 0, max(17 - rows, 0)))
    if features or n % 8:
        b = F.pad(b, (0, features, 0, -n % 8))
    return torch._int_mm(a, b.T)[:rows, :n]


def principal_axes(parts: Iterable[Tensor], dims: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The `dims` directions of largest variance of centered rows (given in parts), as columns `[D, dims]`.

    The covariance is summed in float64, part by part, so no float64 copy of the whole set is made.
    """
    covariance = sum(part.double().T @ part.double() for part in parts)
    _, vectors = torch.linalg.eigh(covariance)  # eigenvalues ascending
    return vectors[:, -dims:].flip(1).to(dtype)
