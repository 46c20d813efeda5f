"""The KNN module: its settings, the memorized training split (buffers, so checkpoints hold it), the vote.

How the split is searched is a `Search` (search.py), chosen by `choose_search` when the split is
memorized or loaded from a checkpoint; the module only hands it the queries.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from visionlab import patches
from visionlab.checks import Each, Either, Maybe, OneOf, Switch, Whole
from visionlab.data import DeviceSplit
from visionlab.errors import UserError
from visionlab.models.knn.float_search import FloatSearch
from visionlab.models.knn.int8_codes import pixel_codes, stores_codes
from visionlab.models.knn.int8_l2 import IntegerL2
from visionlab.models.knn.pruned_l1 import PrunedL1
from visionlab.models.knn.pruned_l2 import PrunedL2
from visionlab.models.knn.search import Search, principal_axes

log = logging.getLogger(__package__)  # visionlab.models.knn, as when the package was one module

DISTANCES = ("l2", "l1", "lp", "cosine")
WEIGHTS = ("uniform", "distance")
# Filled by fit() or a checkpoint; None buffers stay out of state_dict until then. With the 8-bit search,
# train_features holds int8 codes, train_norms their squared norms (int32), and pixel_scale/pixel_shift
# undo the normalization of queries.
BUFFERS = (
    "mean",
    "scale",
    "components",
    "train_features",
    "train_norms",
    "train_labels",
    "pixel_scale",
    "pixel_shift",
)


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
        for name in BUFFERS:
            self.register_buffer(name, None)
        self._search: Search | None = None  # chosen by fit() or a checkpoint's load (see `search`)

    # ---- memorizing ---------------------------------------------------------------------------

    def fit(self, train: DeviceSplit) -> None:
        """Store the training split, after the preprocessing fitted on it (and on nothing else), and choose
        how it is searched.

        One float32 copy of the training images is made, filled chunk by chunk and transformed in
        place, so memorizing needs no second copy of the training set (PCA adds its smaller result).
        The integer search stores one int8 copy instead.
        """
        n = len(train)
        if self.ks[-1] > n:
            raise UserError(
                f"model.k={self.ks[-1]} is more than the {n:,} training images: use values of k from 1 to {n}"
            )
        # a second fit starts afresh
        self.mean = self.scale = self.components = self.pixel_scale = self.pixel_shift = self._search = None
        self.train_labels = train.labels
        if stores_codes(train, self.distance, self.normalize, self.pca):
            self.train_features, self.train_norms, self.pixel_scale, self.pixel_shift = pixel_codes(
                train, self.chunk_size
            )
        else:
            self._memorize_features(train)
        self._search = choose_search(self)
        self._log_memory()

    def _memorize_features(self, train: DeviceSplit) -> None:
        """Store the training images as float32 features: preprocessed, projected, unit vectors for cosine."""
        n = len(train)
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
                part.copy_(self.vectors(part))
            self.train_features = pixels
        else:
            self.train_features = torch.cat([self.vectors(part) for part, _ in rows])
        del pixels, rows
        self.train_norms = torch.linalg.vector_norm(self.train_features, ord=self.p, dim=1)

    def _log_memory(self) -> None:
        n, n_features = self.train_features.shape
        log.info(
            "kNN: memorized %s training images as %d %s (%.0f MiB); searching %d queries at a time "
            "takes at most %.0f MiB of scratch memory (model.chunk_size sets it)",
            f"{n:,}",
            n_features,
            self.search.stored_as,
            self.train_features.nbytes / 2**20,
            self.chunk_size,
            self.scratch_bytes() / 2**20,
        )

    @property
    def search(self) -> Search:
        """The search fit() chose for the stored split. `.to(device)` replaces the stored tensors, and the
        route may differ on the new device (a CUDA GPU has a fast int8 product): the search is then chosen
        again for them."""
        if self.train_features is None:
            raise RuntimeError("KNN has not memorized a training split yet: call fit(train) first")
        if self._search is None or self._search.features is not self.train_features:
            self._search = choose_search(self)
        return self._search

    # ---- checkpoints: the memorized split and the chosen k travel in the state dict --------------

    def get_extra_state(self) -> dict[str, int]:
        return {"k": self.k}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.k = state["k"]

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        """Buffers are None until fit(); give each one a tensor of the stored shape to load into. The loaded
        split gets its search as fit() would choose it (whatever an earlier one kept is dropped)."""
        for name in BUFFERS:
            if getattr(self, name) is None and prefix + name in state_dict:
                setattr(self, name, torch.empty_like(state_dict[prefix + name]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._search = None if self.train_features is None else choose_search(self)

    def scratch_bytes(self) -> int:
        """An upper bound on the memory a search for the largest k allocates besides the stored training set
        (`Search.scratch_bytes`)."""
        return self.search.scratch_bytes(self.ks[-1])

    def vectors(self, x: Tensor) -> Tensor:
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
        return self.search.nearest(x, k)

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


def choose_search(model: KNN) -> Search:
    """How the model's stored split is searched: the one place the route is chosen.

    - float32 features (anything but 8-bit pixels with one scale): `FloatSearch`;
    - int8 codes by L1: `PrunedL1`, its L2 bound by int8 products where they are fast;
    - int8 codes by L2: `IntegerL2` where int8 products are fast (a CUDA GPU, a CPU with VNNI), else `PrunedL2`.
    """
    if model.pixel_scale is None:
        return FloatSearch(
            model.train_features, model.train_norms, model.distance, model.p, model.chunk_size, model.vectors
        )
    stored = model.train_features, model.train_norms, model.pixel_scale, model.pixel_shift, model.chunk_size
    fast = model.train_features.is_cuda or patches.cpu_has_vnni()
    if model.distance == "l1":
        return PrunedL1(*stored, int8_matmul=fast)
    return IntegerL2(*stored) if fast else PrunedL2(*stored)
