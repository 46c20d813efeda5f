"""A bag of visual words (Coates, Lee and Ng, AISTATS 2011): which of a learned codebook of small patches occur where.

Learned from the training images alone (`fit`): a sample of patches, each normalized (its own mean
and contrast), then ZCA-whitened with their covariance, then clustered by k-means into `words`
centres, the codebook. Every image is then cut into all its patches (`unfold`), each patch encoded
against the codebook (one matrix product for a batch of images) and the codes summed over a grid
of image regions. Encodings: `hard`, a count of each word's nearest patches; `triangle`, each
patch's max(0, mean distance - distance to the word), which is zero for the words farther than average.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Annotated

import torch
import torch.nn.functional as F

from visionlab.cache import TensorCache, images_digest
from visionlab.checks import Number, OneOf, Switch, Whole
from visionlab.errors import UserError
from visionlab.features.kmeans import INITS, kmeans

log = logging.getLogger("visionlab")

ENCODINGS = ("triangle", "hard")
CONTRAST_EPS = 10.0  # added to each patch's variance before dividing by its square root (Coates et al., in 0-255 units)
# Numbers of [images, patches, words] scratch per encoding step (64 MiB of float32): big enough that each step is a
# few large matrix products, small enough to stay out of the way of the run's own memory.
SCRATCH = 2**24


@dataclass
class BagOfWords:
    """`features.bow`: `words` learned patches, each pooled over `pool_grid` x `pool_grid` image regions.

    patch_size, stride: square patches of this many pixels, taken every `stride` pixels.
    whiten: ZCA-whiten the normalized patches (eigenvalues + `whiten_eps`), as the codebook is learned
        and as images are encoded.
    sample, iterations, init, seed: k-means on `sample` random training patches, at most `iterations` Lloyd steps from
        `init` (random: `words` distinct patches; k-means++: better starts, but `words` passes over the patches first).
    fitted_on: set by `fit`, never in the config: the digest of the training images, so the
        features cache tells one training split's codebook from another's.
    """

    patch_size: Annotated[int, Whole(1, unit="pixels")] = 6
    stride: Annotated[int, Whole(1, unit="pixels")] = 1
    words: Annotated[int, Whole(1)] = 1600
    encoding: Annotated[str, OneOf(*ENCODINGS)] = "triangle"
    pool_grid: Annotated[int, Whole(1, unit="regions per side")] = 2
    whiten: Annotated[bool, Switch()] = True
    whiten_eps: Annotated[float, Number(gt=0, example=0.1)] = 0.1
    sample: Annotated[int, Whole(1, unit="patches")] = 50_000
    iterations: Annotated[int, Whole(1)] = 10
    init: Annotated[str, OneOf(*INITS)] = "random"
    seed: Annotated[int, Whole(0)] = 0
    fitted_on: str = field(default="", init=False)

    def positions(self, height: int, width: int) -> tuple[int, int]:
        """Patches down and across an image of this size."""
        p = self.patch_size
        if height < p or width < p:
            raise UserError(
                f"features.bow.patch_size={p} is larger than the images ({height}x{width}): use a patch_size up to "
                f"{min(height, width)}"
            )
        rows, cols = (height - p) // self.stride + 1, (width - p) // self.stride + 1
        if min(rows, cols) < self.pool_grid:
            raise UserError(
                f"features.bow.pool_grid={self.pool_grid} needs at least {self.pool_grid} patches down and across, "
                f"these images have {rows}x{cols}: use a smaller pool_grid or stride"
            )
        return rows, cols

    def size(self, shape: tuple[int, int, int]) -> int:
        """Numbers per image of shape [C, H, W]."""
        self.positions(*shape[1:])
        return self.words * self.pool_grid**2

    def describe(self, shape: tuple[int, int, int]) -> str:
        rows, cols = self.positions(*shape[1:])
        p, g = self.patch_size, self.pool_grid
        whitened = "whitened" if self.whiten else "not whitened"
        return (
            f"bag of {self.words} words ({rows}x{cols} patches of {p}x{p} pixels every {self.stride}, {whitened}, "
            f"{self.encoding} encoding, summed over {g}x{g} regions)"
        )

    # ---- learning the codebook -------------------------------------------------------------------

    def fit(self, images: torch.Tensor, device: torch.device, cache: TensorCache | None = None) -> BagOfWords:
        """A copy with the whitening and codebook of these (training) uint8 images `[N, C, H, W]`,
        from `cache` when it has them."""
        fitted = replace(self)
        fitted.fitted_on = images_digest(images)
        parameters = {k: v for k, v in asdict(self).items() if k != "fitted_on"}
        key = {"dataset": "bow", "split": "codebook", "images": fitted.fitted_on, "parameters": parameters}
        d = images.shape[1] * self.patch_size**2
        expected = {
            "mean": (torch.float32, (d,)),
            "whitening": (torch.float32, (d, d)),
            "unwhitening": (torch.float32, (d, d)),
            "codebook": (torch.float32, (self.words, d)),
            "counts": (torch.int64, (self.words,)),
        }
        store = (
            TensorCache(cache.folder, "bag-of-words codebook cache", "learning the codebook again")
            if cache is not None
            else None
        )
        state = store.load(key, expected) if store is not None else None
        if state is not None:
            log.info("features: bag-of-words codebook loaded from %s", store.path(key))
        else:
            started = time.perf_counter()
            state = self._learn(images, device)
            where = store.save(key, state) if store is not None else None
            log.info(
                "features: bag-of-words codebook of %s words learned in %.1f s%s",
                f"{self.words:,}",
                time.perf_counter() - started,
                f", cached in {where}" if where else "",
            )
        for name, tensor in state.items():
            setattr(fitted, name, tensor.to(device))
        return fitted

    def _learn(self, images: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        patches = self.normalized(self.sample_patches(images).to(device))
        if len(patches) < self.words:
            raise UserError(
                f"features.bow.words={self.words} needs at least as many patches to cluster, "
                f"features.bow.sample={self.sample} gives {len(patches)}: raise sample or lower words"
            )
        mean, whitening, unwhitening = zca(patches, self.whiten_eps) if self.whiten else identity(patches)
        clusters = kmeans((patches - mean) @ whitening, self.words, self.iterations, self.seed, self.init)
        log.info(
            "features: k-means stopped after %d iterations, inertia %.4g per patch",
            clusters.iterations,
            clusters.inertia / len(patches),
        )
        return {
            "mean": mean,
            "whitening": whitening,
            "unwhitening": unwhitening,
            "codebook": clusters.centres,
            "counts": clusters.counts,
        }

    def sample_patches(self, images: torch.Tensor) -> torch.Tensor:
        """`sample` patches `[n, C*p*p]` (uint8, unfold's order) at random images and patch positions, with replacement,
        seeded."""
        n, c, height, width = images.shape
        rows, cols = self.positions(height, width)
        generator = torch.Generator().manual_seed(self.seed)
        image = torch.randint(n, (self.sample,), generator=generator)
        top = torch.randint(rows, (self.sample,), generator=generator) * self.stride
        left = torch.randint(cols, (self.sample,), generator=generator) * self.stride
        offsets = torch.arange(self.patch_size)
        patches = images[
            image.view(-1, 1, 1, 1),
            torch.arange(c).view(1, -1, 1, 1),
            (top.view(-1, 1) + offsets).view(-1, 1, self.patch_size, 1),
            (left.view(-1, 1) + offsets).view(-1, 1, 1, self.patch_size),
        ]
        return patches.flatten(1)

    @staticmethod
    def normalized(patches: torch.Tensor) -> torch.Tensor:
        """Patches `[..., D]` as float, each less its mean and divided by its contrast:
        sqrt(variance + CONTRAST_EPS)."""
        x = patches.float()
        variance, mean = torch.var_mean(x, dim=-1, keepdim=True)
        return (x - mean).div_(variance.add_(CONTRAST_EPS).sqrt_())

    # ---- encoding ----------------------------------------------------------------------------------

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled codes `[N, words * pool_grid^2]` (region by region, word by word) of uint8 images `[N, C, H, W]`."""
        if not self.fitted_on:
            raise RuntimeError("BagOfWords is fitted on the training images (fit) before it encodes any")
        rows, cols = self.positions(*images.shape[2:])
        step = max(1, SCRATCH // (rows * cols * self.words))
        return torch.cat([self._encode(images[start : start + step]) for start in range(0, len(images), step)])

    def patch_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Every patch's code `[N, patches, words]` (row-major positions): triangle activations,
        or 1 for the nearest word."""
        patches = F.unfold(images.float(), self.patch_size, stride=self.stride).transpose(1, 2)  # [N, P, C*p*p]
        x = (self.normalized(patches) - self.mean) @ self.whitening
        squared = (
            torch.matmul(x, self.codebook.T)
            .mul_(-2)
            .add_(self.codebook.square().sum(1))
            .add_(x.square().sum(-1, keepdim=True))
        )
        if self.encoding == "hard":
            return torch.zeros_like(squared).scatter_(-1, squared.argmin(-1, keepdim=True), 1.0)
        distance = squared.clamp_min_(0).sqrt_()
        mean = distance.mean(-1, keepdim=True)
        return distance.neg_().add_(mean).clamp_min_(0)  # max(0, mean - distance), in place

    def _encode(self, images: torch.Tensor) -> torch.Tensor:
        codes = self.patch_codes(images)
        regions = self.regions(*images.shape[2:], codes.device)  # [G*G, P]
        return torch.matmul(regions, codes).flatten(1)

    def regions(self, height: int, width: int, device: torch.device) -> torch.Tensor:
        """`[G*G, patches]`: 1 where a patch position falls in a region of the pool grid (row-major both)."""
        rows, cols = self.positions(height, width)
        g = self.pool_grid
        region = (torch.arange(rows, device=device) * g // rows).view(-1, 1) * g + (
            torch.arange(cols, device=device) * g // cols
        ).view(1, -1)
        return F.one_hot(region.flatten(), g * g).T.float()


def zca(patches: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ZCA whitening of patches `[n, D]`: their mean,
    and the symmetric V diag(1/sqrt(eigenvalue + eps)) V^T and its inverse.

    In float64: normalized patches have an eigenvalue of zero (their own mean is gone), which
    float32 rounding would turn into noise magnified by 1/sqrt(eps).
    """
    x = patches.double()
    mean = x.mean(0)
    covariance = torch.cov((x - mean).T, correction=0)
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    scale = eigenvalues.clamp_min(0).add(eps).sqrt()
    whitening = (vectors / scale) @ vectors.T
    unwhitening = (vectors * scale) @ vectors.T
    return mean.float(), whitening.float(), unwhitening.float()


def identity(patches: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """No whitening (`whiten: false`): a zero mean and identity matrices, so encoding is the same code either way."""
    d = patches.shape[1]
    eye = torch.eye(d, device=patches.device)
    return torch.zeros(d, device=patches.device), eye, eye.clone()
