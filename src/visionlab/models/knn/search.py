"""What every search route shares: the `Search` they all are, and the helpers more than one of them uses."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
from torch import Tensor

# float32 candidates per query beyond k, ranked exactly: a few more than k, so that a near tie at the k-th
# rarely sends a row to a slower fallback (every route's step 3); 8 leaves room for data harder than MNIST.
CANDIDATE_MARGIN = 8
FLOAT32_UNIT_ROUNDOFF = 2.0**-24


class Search(ABC):
    """One route to the k nearest training rows, built by `KNN.fit` (or a checkpoint's load) over the
    stored rows, which it searches in chunks of `chunk_size` queries.

    `nearest` gives what `KNN.neighbours` gives: distances `[N, k]` (float64, ascending, in the units of
    the model's inputs) and training indices `[N, k]`, the lower index first at equal distance.
    """

    stored_as: ClassVar[str]  # what the stored rows are, for fit's log line

    def __init__(self, features: Tensor, chunk_size: int):
        self.features = features
        self.chunk_size = chunk_size

    @abstractmethod
    def nearest(self, x: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """The k nearest training rows of each of the model's inputs x."""

    def scratch_bytes(self, k: int) -> int:
        """An upper bound on the memory a search for k neighbours allocates besides the stored rows.

        Per query in a chunk: its float32 distances to all n training rows (4n), its candidates'
        indices and float64 distances while they are sorted (64 per candidate), its preprocessed and
        float64 copies (32 per feature); plus topk's per-thread row buffer (16n). Exact distances are
        computed in pieces no larger than the float32 block, after that block is freed. Routes that keep
        more (float32 copies, gathered candidates) add theirs.
        """
        n, d = self.features.shape
        m = min(k + CANDIDATE_MARGIN, n)
        return self.chunk_size * (4 * n + 64 * m + 32 * d) + 16 * n * torch.get_num_threads()


def first_k(distances: Tensor, candidates: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The first k of each row's candidates by (distance, training index)."""
    candidates, by_index = candidates.sort(dim=1)  # index order, so the stable sort keeps lower indices first
    distances, order = distances.gather(1, by_index).sort(dim=1, stable=True)
    return distances[:, :k], candidates.gather(1, order[:, :k])


def ranked(
    exact: Callable[[Tensor, Tensor], Tensor], q: Tensor, stored: Tensor, candidates: Tensor, k: int, chunk_size: int
) -> tuple[Tensor, Tensor]:
    """The first k of each row's candidates (rows of `stored`) by (exact distance, training index);
    `exact` measures paired rows of q and stored, in pieces of about the float32 block's bytes."""
    n, width = candidates.shape
    queries, images = torch.arange(n, device=q.device).repeat_interleave(width), candidates.flatten()
    piece = max(1, chunk_size * len(stored) // (10 * q.shape[1]))  # ~40 bytes per element
    distances = torch.cat([exact(q[a], stored[b]) for a, b in zip(queries.split(piece), images.split(piece))])
    return first_k(distances.view(n, width), candidates, k)


def principal_axes(parts: Iterable[Tensor], dims: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """The `dims` directions of largest variance of centered rows (given in parts), as columns `[D, dims]`.

    The covariance is summed in float64, part by part, so no float64 copy of the whole set is made.
    """
    covariance = sum(part.double().T @ part.double() for part in parts)
    _, vectors = torch.linalg.eigh(covariance)  # eigenvalues ascending
    return vectors[:, -dims:].flip(1).to(dtype)
