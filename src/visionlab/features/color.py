"""Colour histograms: how much of each hue (or of each red, green and blue level) an image holds, wherever it is.

Counting is one `scatter_add_` over the batch; each histogram is divided by the pixel count, so
it sums to 1 whatever the image size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from visionlab.checks import OneOf, Whole
from visionlab.errors import UserError

SPACES = ("hsv", "rgb")


@dataclass
class ColorHistogram:
    """`features.color`: a histogram of `bins` bins per channel.

    space: hsv, the hue channel only (matplotlib's `rgb_to_hsv`; grey pixels count as hue 0), or
        rgb, each channel's intensity (one channel of a greyscale image).
    """

    bins: Annotated[int, Whole(1, 256)] = 10
    space: Annotated[str, OneOf(*SPACES)] = "hsv"

    def size(self, shape: tuple[int, int, int]) -> int:
        """Numbers per image of shape [C, H, W]."""
        self._check_channels(shape[0])
        return self.bins * (1 if self.space == "hsv" else shape[0])

    def _check_channels(self, channels: int) -> None:
        if self.space == "hsv" and channels != 3:
            raise UserError(
                f"features.color.space=hsv needs colour images, these have {channels} channel(s): use "
                "features.color.space=rgb"
            )

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Histograms `[N, size]` of uint8 images `[N, C, H, W]`, channel after channel, each summing to 1."""
        self._check_channels(images.shape[1])
        if self.space == "hsv":
            index = hue_bin(images, self.bins).long()  # [N, 1, H, W]
        else:
            index = images.long() * self.bins // 256  # exact for 8-bit levels
        n, c = index.shape[:2]
        pixels = index[0, 0].numel()
        # channel k's bins follow channel k-1's
        index = index + torch.arange(c, device=images.device).view(1, c, 1, 1) * self.bins
        counts = torch.zeros(n, c * self.bins, device=images.device)
        counts.scatter_add_(1, index.reshape(n, -1), torch.ones(1, 1, device=images.device).expand(n, c * pixels))
        return counts.div_(pixels)

    def describe(self, shape: tuple[int, int, int]) -> str:
        return f"colour histogram ({self.bins} bins of {'hue' if self.space == 'hsv' else 'each channel'})"


def hue_bin(images: torch.Tensor, bins: int) -> torch.Tensor:
    """Which of `bins` equal hue bins each pixel of uint8 RGB images `[N, 3, H, W]` falls in, as `[N, 1, H, W]`.

    Hue as matplotlib.colors.rgb_to_hsv defines it (grey pixels: 0; when channels tie for the largest,
    blue's formula wins over green's over red's), binned in exact integer arithmetic: hue is
    sixths / (6 * delta) with whole numbers, so a hue right on a bin edge lands in the bin it starts
    (float64 rounding puts some of those one bin lower).
    """
    x = images.int()
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    top = x.amax(1, keepdim=True)
    delta = top - x.amin(1, keepdim=True)
    # hue * 6 * delta
    sixths = torch.where(b == top, 4 * delta + r - g, torch.where(g == top, 2 * delta + b - r, g - b))
    turn = 6 * delta.clamp_min(1)
    return torch.where(delta > 0, sixths.remainder(turn) * bins // turn, 0)
