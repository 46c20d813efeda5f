"""Small pieces shared by the model families."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import torch
from torch import nn

from visionlab import compiled
from visionlab.checks import Each, Number, OneOf, Whole

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
}


Activation = Annotated[str, OneOf(*ACTIVATIONS)]  # a model's `activation` argument
Dropout = Annotated[float, Number(ge=0, lt=1, example=0.25)]  # the probability of zeroing a unit
Widths = Annotated[Sequence[int], Each(Whole(1), example="[16, 32, 64]")]  # channels per stage
# units per hidden layer
Hidden = Annotated[Sequence[int], Each(Whole(1), empty_ok=True, example="[128], or [] for none")]


def activation(name: str) -> nn.Module:
    return ACTIVATIONS[name]()


class PatchWhitening(nn.Module):
    """A first conv whose filters whiten the image's k x k patches, fitted to the training images and then frozen.

    The filters are the eigenvectors of the patches' covariance, each divided by the square root of its
    eigenvalue (plus `eps`), in both signs: 2 x C x k x k output channels, decorrelated and of unit
    variance on the training images, so the next layers start from a well-conditioned input
    (KellerJordan/cifar10-airbench; Coates and Ng's whitening). Only the bias trains; there is no padding.

    It is fitted once: by `fit` (say on the training split), or else by the first batch it sees in
    training mode, which gives the same filters on every run of the same seed. The filters are ordinary
    weights, so checkpoints carry them; whether they were fitted travels in the state dict too.
    """

    def __init__(self, in_channels: int, kernel_size: int = 2, eps: float = 5e-4):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2 * in_channels * kernel_size**2, kernel_size, bias=True)
        self.conv.weight.requires_grad_(False)
        nn.init.zeros_(self.conv.bias)
        self.eps = eps
        self.fitted = False

    @torch.no_grad()
    def fit(self, images: torch.Tensor) -> None:
        """Set the filters from these (normalized) images' patches. The covariance is summed in float64,
        256 images at a time (whatever autocast is around), so no copy of every patch is made."""
        c, k = self.conv.in_channels, self.conv.kernel_size[0]
        covariance = images.new_zeros(c * k * k, c * k * k, dtype=torch.float64)
        count = 0
        with torch.autocast(images.device.type, enabled=False):
            for part in images.split(256):
                patches = part.double().unfold(2, k, 1).unfold(3, k, 1)  # [n, C, H', W', k, k]
                patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
                covariance += patches.T @ patches
                count += len(patches)
            eigenvalues, eigenvectors = torch.linalg.eigh(covariance / count)  # ascending
        filters = (eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]).flip(0)
        filters = filters.reshape(-1, c, k, k).to(self.conv.weight.dtype)
        self.conv.weight.copy_(torch.cat([filters, -filters]))
        self.fitted = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.fitted:
            compiled.kept_out(self.fit)(x)  # eager under torch.compile
        return self.conv(x)

    def get_extra_state(self) -> dict[str, bool]:
        return {"fitted": self.fitted}

    def set_extra_state(self, state: dict[str, bool]) -> None:
        self.fitted = state["fitted"]
