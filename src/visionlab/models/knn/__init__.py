"""k-nearest neighbours: the training split is the model; a query takes the vote of its k closest images.

There is nothing to learn, so `KNN.fit` only stores the training images (as buffers, after the optional
per-pixel standardization and PCA, both fitted on the training split alone) and `forward` returns
`[N, C]` vote shares like any other model's class scores.

The search is exact brute force on the device, a chunk of `chunk_size` queries at a time, by one of four
routes, chosen once when the split is memorized (`model.choose_search`), each in its own file:

- float_search.py, `FloatSearch`: float32 distances, the neighbours' recomputed in float64 under a proven
  bound on float32 rounding. Every distance, any input: features, `normalize`, `pca`, per-channel scales.
- On 8-bit images (the datasets' own pixels, one normalization scale for every channel, no `normalize` or
  `pca`), L2 and L1 on a CPU or a CUDA GPU are searched in integers, on int8 codes (int8_codes.py):
  - int8_l2.py, `IntegerL2`: L2 by torch's int8 matrix product where it is fast (a GPU, a CPU with VNNI);
  - pruned_l2.py, `PrunedL2`: L2 elsewhere, from float32 products (exact in pieces), pruned by a lower
    bound from the images' projections on principal axes;
  - pruned_l1.py, `PrunedL1`: L1, pruned by the exact L2 distances (L1 >= L2^2 / 255 for 8-bit differences).

Whichever route, the answer is what a float64 brute force gives, with ties settled as scikit-learn's brute
force settles them:

- neighbours at equal distance: the lower training index comes first;
- classes with equal votes: the lowest class index wins (`argmax` returns the first maximum).

One search serves several k: the neighbours for the largest k, in that order, hold those of every
smaller k, so `scores_by_k` scores a whole list of k for the price of one. docs/models.md ("kNN") has the
arguments; BENCHMARKS.md ("kNN") and docs/speed.md the figures.
"""

from __future__ import annotations

from visionlab.models.knn.model import KNN

__all__ = ["KNN"]
