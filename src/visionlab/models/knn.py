"""k-nearest neighbours: the training split is the model; a query takes the vote of its k closest images.

There is nothing to learn, so `fit` only stores the training images (as buffers, after the optional
per-pixel standardization and PCA, both fitted on the training split alone) and `forward` returns
`[N, C]` vote shares like any other model's class scores.

The search is exact brute force on the device, a chunk of `chunk_size` queries at a time: float32
distances to every training image (one matrix product for L2 and cosine, `torch.cdist` for L1/Lp),
`topk` for a few candidates more than k, then the candidates' distances recomputed in float64. A row
is accepted only when no image left out can be as close even after the worst float32 rounding (see
`_rounding_bound`); the rare rows that fail (near ties, duplicated images) re-rank every image the
bound cannot rule out. The answer is therefore what a float64 brute force gives, with ties settled
as scikit-learn's brute force settles them:

- neighbours at equal distance: the lower training index comes first;
- classes with equal votes: the lowest class index wins (`argmax` returns the first maximum).

One search serves several k: the neighbours for the largest k, in that order, hold those of every
smaller k, so `scores_by_k` scores a whole list of k for the price of one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionlab.data import DeviceSplit
from visionlab.errors import UserError

log = logging.getLogger(__name__)

DISTANCES = ("l2", "l1", "lp", "cosine")
WEIGHTS = ("uniform", "distance")
# float32 candidates per query beyond k, re-ranked in float64: enough that the rounding bound settles
# almost every row without the slower fallback (measured on MNIST, see BENCHMARKS.md).
CANDIDATE_MARGIN = 16
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_ks(k) -> tuple[int, ...]:
    """model.k as a sorted tuple of distinct values (one number or a list such as Hydra's ListConfig)."""
    listed = isinstance(k, Sequence) and not isinstance(k, str)
    values = list(k) if listed else [k]
    if not values or not all(_whole_number(v) and v >= 1 for v in values):
        raise UserError(f"model.k={values if listed else k!r} is invalid: use a whole number of at least 1, or a list of them such as [1, 3, 5]")
    return tuple(sorted(set(values)))


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

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        k: int | Sequence[int] = 1,
        distance: str = "l2",
        p: float | None = None,
        weights: str = "uniform",
        chunk_size: int = 512,
        normalize: bool = False,
        pca: int | None = None,
    ):
        super().__init__()
        self.ks = _check_ks(k)
        self.k = self.ks[0]  # the k that forward() votes with; the training loop sets the best one on val
        if distance not in DISTANCES:
            raise UserError(f"model.distance={distance!r} is unknown: use one of l2, l1, cosine, or lp with model.p")
        if distance == "lp":
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 1 <= p < math.inf:
                raise UserError(f"model.p={p!r} is invalid for model.distance=lp: use a number of at least 1, such as 3")
            distance = {1: "l1", 2: "l2"}.get(p, "lp")  # the exact same distances, by the faster route
        elif p is not None:
            raise UserError(f"model.p={p!r} is only used with model.distance=lp: set model.distance=lp or leave model.p null")
        if weights not in WEIGHTS:
            raise UserError(f"model.weights={weights!r} is unknown: use uniform or distance")
        if not _whole_number(chunk_size) or chunk_size < 1:
            raise UserError(f"model.chunk_size={chunk_size!r} is invalid: use a whole number of queries of at least 1, such as 512")
        if not isinstance(normalize, bool):
            raise UserError(f"model.normalize={normalize!r} is invalid: use true or false")
        pixels = math.prod(in_shape)
        if pca is not None and (not _whole_number(pca) or not 1 <= pca <= pixels):
            raise UserError(f"model.pca={pca!r} is invalid: use null (off) or a whole number of dimensions from 1 to {pixels}")
        self.distance = distance
        self.p = {"l1": 1, "l2": 2, "cosine": 2}.get(distance, p)  # the norm used for the rounding bound
        self.weights = weights
        self.chunk_size = chunk_size
        self.normalize = normalize
        self.pca = pca
        self.num_classes = num_classes
        # Filled by fit(); None buffers stay out of state_dict until then.
        for name in ("mean", "scale", "components", "train_features", "train_norms", "train_labels"):
            self.register_buffer(name, None)

    # ---- memorizing ---------------------------------------------------------------------------

    def fit(self, train: DeviceSplit) -> None:
        """Store the training split, after the preprocessing fitted on it (and on nothing else)."""
        n = len(train)
        if self.ks[-1] > n:
            raise UserError(f"model.k={self.ks[-1]} is more than the {n:,} training images: use values of k from 1 to {n}")
        pixels = torch.cat([images.flatten(1) for images, _ in train.in_order(self.chunk_size)])
        if self.normalize or self.pca:
            std, mean = torch.std_mean(pixels, dim=0, correction=0)
            self.mean = mean
            if self.normalize:
                self.scale = torch.where(std > 0, std, torch.ones_like(std))  # as scikit-learn's StandardScaler
            if self.pca:
                self.components = principal_axes((self._preprocess(part) for part in pixels.split(self.chunk_size)), self.pca)
        self.train_features = torch.cat([self._features(part) for part in pixels.split(self.chunk_size)])
        del pixels
        self.train_norms = torch.linalg.vector_norm(self.train_features, ord=self.p, dim=1)
        self.train_labels = train.labels
        features = self.train_features
        log.info(
            "kNN: memorized %s training images as %d features each (%.0f MB); searching %d queries at a time "
            "takes at most %.0f MB of scratch memory (model.chunk_size sets it)",
            f"{n:,}", features.shape[1], features.numel() * 4 / 2**20, self.chunk_size, self.scratch_bytes() / 2**20,
        )

    def scratch_bytes(self) -> int:
        """An upper bound on the memory one chunk of the search allocates besides the stored training set.

        Per query: its float32 distances to all n training images (4n), the candidates' indices and
        float64 distances while they are sorted (about 64 bytes each), the float64 rows being compared
        (about 48 per feature); plus topk's per-thread row buffer (16n).
        """
        n, d = self.train_features.shape
        m = min(self.ks[-1] + CANDIDATE_MARGIN, n)
        return self.chunk_size * (4 * n + 64 * m + 48 * d) + 16 * n * torch.get_num_threads()

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
        return self.vote(*self.neighbours(x, self.k), self.k)

    def scores_by_k(self, x: Tensor) -> dict[int, Tensor]:
        """Vote shares `[N, C]` for every k in `ks`, from a single search for the largest."""
        distances, indices = self.neighbours(x, self.ks[-1])
        return {k: self.vote(distances, indices, k) for k in self.ks}

    def neighbours(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k nearest training images of each query: distances `[N, k]` (float64, ascending) and
        training indices `[N, k]`; at equal distance the lower training index comes first."""
        found = [self._search(self._features(part), k) for part in x.split(self.chunk_size)]
        distances = torch.cat([d for d, _ in found])
        if self.distance == "l2":
            distances = distances.sqrt()  # searched as squared distances
        return distances, torch.cat([i for _, i in found])

    def vote(self, distances: Tensor, indices: Tensor, k: int) -> Tensor:
        """Vote shares `[N, C]` of the first k neighbours; they sum to 1 per row."""
        labels = self.train_labels[indices[:, :k]]
        if self.weights == "uniform":
            weights = torch.ones(labels.shape, dtype=torch.float64, device=labels.device)
        else:
            nearest = distances[:, :k]
            at_zero = nearest == 0
            weights = torch.where(at_zero.any(1, keepdim=True), at_zero.double(), 1 / nearest)
        votes = torch.zeros(len(labels), self.num_classes, dtype=torch.float64, device=labels.device)
        votes.scatter_add_(1, labels, weights)
        return (votes / votes.sum(1, keepdim=True)).float()

    def _search(self, q: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Exact k nearest for one chunk of query features: float64 distances (squared for l2), indices."""
        train = self.train_features
        approx = self._approx(q)
        m = min(k + CANDIDATE_MARGIN, len(train))
        values, candidates = approx.topk(m, dim=1, largest=False)
        candidates = candidates.sort(dim=1).values  # index order, so the stable sort below keeps lower indices first
        exact = torch.stack([self._exact(q, train[column]) for column in candidates.T], dim=1)
        exact, order = exact.sort(dim=1, stable=True)
        candidates = candidates.gather(1, order)
        distances, indices = exact[:, :k].clone(), candidates[:, :k].clone()
        if m == len(train):
            return distances, indices
        # Every image left out has float32 distance >= values[:, -1], so exact distance >= that - slack.
        slack = self._rounding_bound(q)
        for row in (exact[:, k - 1] >= values[:, -1] - slack).nonzero().flatten().tolist():
            near = (approx[row].double() <= exact[row, k - 1] + slack[row]).nonzero().flatten()  # every possible neighbour
            exact_row = torch.cat([self._exact(q[row], train[part]) for part in near.split(self.chunk_size)])
            exact_row, order = exact_row.sort(stable=True)
            distances[row], indices[row] = exact_row[:k], near[order[:k]]
        return distances, indices

    def _approx(self, q: Tensor) -> Tensor:
        """float32 distances `[n, N]` from each query to every training image (squared for l2)."""
        train = self.train_features
        if self.distance == "l2":  # |x|^2 + |y|^2 - 2<x, y>: one matrix product
            return torch.addmm(self.train_norms.square(), q, train.T, alpha=-2).add_(q.square().sum(1, keepdim=True))
        if self.distance == "cosine":  # 1 - <x, y> of unit vectors
            return torch.addmm(q.new_ones(()), q, train.T, alpha=-1)
        return torch.cdist(q, train, p=self.p)

    def _exact(self, a: Tensor, b: Tensor) -> Tensor:
        """float64 distances between paired (broadcast) rows of a and b, in the units of `_approx`."""
        a, b = a.double(), b.double()
        if self.distance == "l2":
            return (a - b).square().sum(-1)
        if self.distance == "cosine":
            return (1 - (a * b).sum(-1)).clamp_min(0)  # clipped like scikit-learn's cosine_distances
        return torch.linalg.vector_norm(a - b, ord=self.p, dim=-1)

    def _rounding_bound(self, q: Tensor) -> Tensor:
        """Per query, how far any float32 distance of `_approx` can be from the exact one.

        Each is a float32 sum over d features (plus a few norms); whatever the order of summation,
        such a sum is off by at most about (d + 2p + 4) unit roundoffs times the sum of the terms'
        magnitudes (Higham, Accuracy and Stability of Numerical Algorithms, ch. 3), and the norms
        bound those: (|x| + |y|)^2 for the matrix-product forms, |x|_p + |y|_p for cdist. Doubled for
        safety. It assumes full float32 matrix products (torch's default; not TF32 or bfloat16).
        """
        reach = torch.linalg.vector_norm(q.double(), ord=self.p, dim=1) + self.train_norms.max().double()
        power = 2 if self.distance in ("l2", "cosine") else 1
        return 2 * (q.shape[1] + 2 * self.p + 4) * FLOAT32_UNIT_ROUNDOFF * reach**power


def principal_axes(parts: Iterable[Tensor], dims: int) -> Tensor:
    """The `dims` directions of largest variance of centered rows (given in parts), as columns `[D, dims]`.

    The covariance is summed in float64, part by part, so no float64 copy of the whole set is made.
    """
    covariance = sum(part.double().T @ part.double() for part in parts)
    _, vectors = torch.linalg.eigh(covariance)  # eigenvalues ascending
    return vectors[:, -dims:].flip(1).float()
