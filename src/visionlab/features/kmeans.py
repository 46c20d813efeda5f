"""k-means (Lloyd's iterations from a greedy k-means++ start or from random points),
batched on whatever device the points are on.

Each iteration is one matrix product per chunk of points (squared distances as |c|^2 - 2 x.c, the
|x|^2 term left out: it does not change the nearest centre), an `index_add_` of the points into
their centres' sums and a `bincount`. Stopping follows scikit-learn's `KMeans`: when the centres
move (squared Frobenius norm) by at most `tol` times the points' mean variance.
tests/features/test_bow.py checks the inertia against scikit-learn's on the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# points per distance chunk: with 1,600 centres, 13 MiB of float32 scratch, small enough for the CPU's cache
ROWS = 2048
INITS = ("random", "k-means++")


@dataclass
class Clusters:
    centres: torch.Tensor  # [k, D]
    counts: torch.Tensor  # [k] points nearest each centre at the end
    inertia: float  # sum of squared distances from each point to its nearest centre
    iterations: int


def nearest(points: torch.Tensor, centres: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's nearest centre `[N]` and the squared distance to it `[N]`, a chunk of points at a time."""
    squared_centres = centres.square().sum(1)
    index = torch.empty(len(points), dtype=torch.long, device=points.device)
    distance = torch.empty(len(points), dtype=points.dtype, device=points.device)
    for start in range(0, len(points), ROWS):
        chunk = points[start : start + ROWS]
        partial = torch.addmm(squared_centres, chunk, centres.T, alpha=-2)  # |c|^2 - 2 x.c
        best, index[start : start + ROWS] = partial.min(1)
        distance[start : start + ROWS] = (best + chunk.square().sum(1)).clamp_min_(0)
    return index, distance


def plus_plus(points: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """Greedy k-means++ (Arthur and Vassilvitskii, 2007; scikit-learn's start): each next centre is the best of
    2 + ln(k) candidates drawn with probability proportional to their squared distance to the nearest centre so far."""
    trials = 2 + int(math.log(k))
    squared = points.square().sum(1)

    def distances(candidates: torch.Tensor) -> torch.Tensor:  # [len(candidates), N]
        return (
            torch.addmm(squared, points[candidates], points.T, alpha=-2)
            .add_(squared[candidates].unsqueeze(1))
            .clamp_min_(0)
        )

    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(len(points), (1,), generator=generator)
    nearest_so_far = distances(chosen[:1].to(points.device))[0]
    for i in range(1, k):
        weights = nearest_so_far.double().cpu()
        candidates = (
            torch.multinomial(weights, trials, replacement=True, generator=generator)
            if weights.sum() > 0
            else torch.randint(len(points), (trials,), generator=generator)
        )
        options = torch.minimum(nearest_so_far, distances(candidates.to(points.device)))  # [trials, N]
        best = options.sum(1).argmin()
        chosen[i], nearest_so_far = candidates[best], options[best]
    return points[chosen.to(points.device)].clone()


def kmeans(
    points: torch.Tensor, k: int, iterations: int = 50, seed: int = 0, init: str = "k-means++", tol: float = 1e-4
) -> Clusters:
    """`k` centres of `points` `[N, D]` (N >= k), seeded: the same points and seed give the same centres.

    init: k-means++ (better starts, k passes over the points) or random (k distinct points, no pass).
    A centre left without points is moved to the point farthest from its own centre, as scikit-learn does.
    """
    generator = torch.Generator().manual_seed(seed)
    if init == "k-means++":
        centres = plus_plus(points, k, generator)
    else:
        centres = points[torch.randperm(len(points), generator=generator)[:k].to(points.device)].clone()
    threshold = tol * points.var(0, correction=0).mean().item()
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 (the count of iterations run, read after the loop)
        index, distance = nearest(points, centres)
        counts = torch.bincount(index, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, index, points)
        moved = sums / counts.clamp_min(1).unsqueeze(1).to(points.dtype)
        empty = (counts == 0).nonzero().flatten()
        if len(empty):
            moved[empty] = points[distance.topk(len(empty)).indices]
        shift = (moved - centres).square().sum().item()
        centres = moved
        if shift <= threshold:
            break
    index, distance = nearest(points, centres)
    return Clusters(centres, torch.bincount(index, minlength=k), distance.sum().item(), done)
