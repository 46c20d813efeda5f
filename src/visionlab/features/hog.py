"""Histograms of oriented gradients (Dalal and Triggs, 2005), for a whole batch of images at once.

Each step is one tensor operation over the batch, on the device the images are on: central
differences by convolution, the strongest channel per pixel, its orientation bin, magnitudes
summed per (cell, bin) with one `scatter_add_`, then overlapping blocks of cells normalized
together. The numbers are those of `skimage.feature.hog` with the same parameters (hard
orientation bins, cells averaged, skimage's block norms and eps); tests/features/test_hog.py
checks it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated

import torch
import torch.nn.functional as F

from visionlab.checks import Either, OneOf, Switch, Whole
from visionlab.errors import UserError

BLOCK_NORMS = ("L2-Hys", "L2", "L1", "L1-sqrt", "none")
EPS = 1e-5  # skimage's, in the units of the image (0-255 for 8-bit images)
HYS_CLIP = 0.2  # L2-Hys: clip after L2, then renormalize


@dataclass
class HOG:
    """`features.hog`: HOG of 8-bit images, in skimage's conventions.

    cell_size: pixels per (square) cell; the pixels right and below the last whole cell are left out.
        auto: the largest size up to 8 whose cells tile the image exactly (8 for 32x32 CIFAR-10,
        7 for 28x28 MNIST, where 8 would leave a quarter of the image out); set by `for_shape`.
    bins: orientation bins over 0-180 degrees (unsigned) or 0-360 (signed).
    block_size: cells per (square) block side; blocks overlap with a stride of one cell.
    block_norm: how each block is normalized, one of BLOCK_NORMS ("none": the cell histograms themselves).
    signed: tell a dark-to-light edge from a light-to-dark one (skimage: unsigned only).
    """

    cell_size: Annotated[int | str, Either(Whole(1, unit="pixels"), OneOf("auto"))] = 8
    bins: Annotated[int, Whole(1)] = 9
    block_size: Annotated[int, Whole(1, unit="cells")] = 2
    block_norm: Annotated[str, OneOf(*BLOCK_NORMS)] = "L2-Hys"
    signed: Annotated[bool, Switch()] = False

    def for_shape(self, shape: tuple[int, int, int]) -> HOG:
        """This HOG with `cell_size: auto` settled for images of shape [C, H, W]."""
        if self.cell_size != "auto":
            return self
        height, width = shape[1:]
        fits = [c for c in range(8, 3, -1) if height % c == 0 and width % c == 0]
        return replace(self, cell_size=fits[0] if fits else 8)

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Cells down and across an image of this size."""
        if self.cell_size == "auto":
            raise ValueError("HOG(cell_size='auto') is settled by for_shape(image shape) before use")
        rows, cols = height // self.cell_size, width // self.cell_size
        blocks = 1 if self.block_norm == "none" else self.block_size
        if rows < blocks or cols < blocks:
            need = self.cell_size * blocks
            raise UserError(
                f"features.hog.cell_size={self.cell_size} with block_size={self.block_size} needs images of at least "
                f"{need}x{need} pixels, these are {height}x{width}: use a smaller cell_size or block_size"
            )
        return rows, cols

    def size(self, shape: tuple[int, int, int]) -> int:
        """Numbers per image of shape [C, H, W]."""
        rows, cols = self.grid(*shape[1:])
        if self.block_norm == "none":
            return rows * cols * self.bins
        b = self.block_size
        return (rows - b + 1) * (cols - b + 1) * b * b * self.bins

    def cells(self, images: torch.Tensor) -> torch.Tensor:
        """Orientation histograms `[N, rows, cols, bins]`: mean gradient magnitude per bin and cell."""
        rows, cols = self.grid(*images.shape[2:])
        # channels_last: the CPU's fast layout for depthwise convolution
        x = images.float().contiguous(memory_format=torch.channels_last)
        n, c = x.shape[:2]
        # Central differences, 0 on the first and last row (column), as skimage.
        d_row = F.pad(
            F.conv2d(x, x.new_tensor([-1.0, 0.0, 1.0]).view(1, 1, 3, 1).expand(c, 1, 3, 1), groups=c), (0, 0, 1, 1)
        )
        d_col = F.pad(
            F.conv2d(x, x.new_tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(c, 1, 1, 3), groups=c), (1, 1, 0, 0)
        )
        height, width = rows * self.cell_size, cols * self.cell_size
        d_row, d_col = d_row[:, :, :height, :width], d_col[:, :, :height, :width]
        d_row, d_col, squared = strongest_channel(d_row, d_col)
        degrees = torch.rad2deg(torch.atan2(d_row, d_col)).remainder_(360.0 if self.signed else 180.0)
        width_deg = (360.0 if self.signed else 180.0) / self.bins
        orientation = degrees.div_(width_deg).long().clamp_(max=self.bins - 1)  # floor: angles are >= 0
        index = orientation.reshape(n, height * width) + self._cell_offsets(rows, cols, x.device)
        histogram = torch.zeros(n, rows * cols * self.bins, device=x.device)
        histogram.scatter_add_(1, index, squared.sqrt_().reshape(n, height * width))
        return histogram.div_(self.cell_size**2).view(n, rows, cols, self.bins)

    def _cell_offsets(self, rows: int, cols: int, device: torch.device) -> torch.Tensor:
        """`bins * (cell number)` for every pixel of the covered area, row-major: added to its bin, a histogram slot."""
        s = self.cell_size
        cell_row = torch.arange(rows * s, device=device) // s
        cell_col = torch.arange(cols * s, device=device) // s
        return ((cell_row.view(-1, 1) * cols + cell_col.view(1, -1)) * self.bins).view(1, -1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """HOG vectors `[N, size]` of uint8 images `[N, C, H, W]`,
        in skimage's order (block row, block col, cell row, cell col, bin)."""
        cells = self.cells(images)
        if self.block_norm == "none":
            return cells.flatten(1)
        b = self.block_size
        blocks = cells.unfold(1, b, 1).unfold(2, b, 1)  # [N, block rows, block cols, bins, b, b]
        blocks = blocks.permute(0, 1, 2, 4, 5, 3).flatten(3)  # [N, block rows, block cols, b*b*bins]
        return normalize_blocks(blocks, self.block_norm).flatten(1)

    def describe(self, shape: tuple[int, int, int]) -> str:
        """For the log, saying so when whole cells leave part of the image out."""
        rows, cols = self.grid(*shape[1:])
        height, width = rows * self.cell_size, cols * self.cell_size
        covered = (
            ""
            if (height, width) == tuple(shape[1:])
            else f", covering {height}x{width} of {shape[1]}x{shape[2]} pixels"
        )
        blocks = (
            "no blocks"
            if self.block_norm == "none"
            else f"{self.block_size}x{self.block_size}-cell blocks, {self.block_norm}"
        )
        orientation = "signed" if self.signed else "unsigned"
        return (
            f"HOG ({rows}x{cols} cells of {self.cell_size}x{self.cell_size} pixels{covered}, {self.bins} "
            f"{orientation} bins, {blocks})"
        )


def strongest_channel(d_row: torch.Tensor, d_col: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per pixel, the gradient `[N, 1, H, W]` of the channel where it is strongest (the first, on a tie),
    and its squared size.

    A `where` per channel: for 3 channels, cheaper on the CPU than argmax + gather.
    """
    squared = d_row.square() + d_col.square()
    best_row, best_col, best = d_row[:, :1], d_col[:, :1], squared[:, :1]
    for channel in range(1, d_row.shape[1]):
        stronger = squared[:, channel : channel + 1] > best
        best = torch.where(stronger, squared[:, channel : channel + 1], best)
        best_row = torch.where(stronger, d_row[:, channel : channel + 1], best_row)
        best_col = torch.where(stronger, d_col[:, channel : channel + 1], best_col)
    return best_row, best_col, best


def normalize_blocks(blocks: torch.Tensor, method: str) -> torch.Tensor:
    """skimage's block norms over the last dimension."""
    if method in ("L1", "L1-sqrt"):
        out = blocks / (blocks.abs().sum(-1, keepdim=True) + EPS)
        return out.sqrt() if method == "L1-sqrt" else out
    out = blocks / (blocks.square().sum(-1, keepdim=True) + EPS**2).sqrt()
    if method == "L2-Hys":
        out = out.clamp(max=HYS_CLIP)
        out = out / (out.square().sum(-1, keepdim=True) + EPS**2).sqrt()
    return out
