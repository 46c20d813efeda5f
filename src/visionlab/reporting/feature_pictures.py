"""Pictures of what the features see, one drawing per kind of extractor (features/ itself draws nothing).

A network's activations (features=network) are drawn beside each image as a grid of cells, one per number,
brighter for larger.

HOG is drawn the usual way: in each cell, a line along the edge for every orientation bin, as
bright as its share. The lines are stencils, one per bin, so a batch of cell histograms becomes a
picture with one einsum: `[N, rows, cols, bins] x [bins, G, G]`.
"""

from __future__ import annotations

import math
import sys
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from visionlab.features import Features
from visionlab.features.bow import BagOfWords
from visionlab.features.hog import HOG
from visionlab.reporting import visuals
from visionlab.reporting.codebook import codebook_picture

if TYPE_CHECKING:
    from visionlab.features.network import NetworkFeatures

GLYPH = 16  # picture pixels per cell side


def stencils(bins: int, signed: bool, size: int = GLYPH) -> torch.Tensor:
    """`[bins, size, size]`: a line through the centre, across each bin's middle gradient direction
    (so along its edge)."""
    width = (2 * math.pi if signed else math.pi) / bins
    angle = (torch.arange(bins) + 0.5) * width  # gradient direction, as HOG measures it: atan2(d_row, d_col)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    offset = torch.arange(size) - (size - 1) / 2
    row, col = offset.view(1, -1, 1), offset.view(1, 1, -1)
    off_line = (col * cos + row * sin).abs()  # distance from the edge line, in pixels
    along = (row * cos - col * sin).abs()  # distance along it from the centre
    return (1 - off_line).clamp(0, 1) * (along <= size / 2 - 1)


def glyphs(hog: HOG, images: torch.Tensor) -> torch.Tensor:
    """`[N, 1, rows * GLYPH, cols * GLYPH]` in [0, 1]: each image's cell histograms as lines,
    scaled by the image's largest bin."""
    cells = hog.cells(images).cpu()
    cells = cells / cells.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    n, rows, cols, _ = cells.shape
    drawn = torch.einsum("nrcb,bhw->nrhcw", cells, stencils(hog.bins, hog.signed))
    return drawn.reshape(n, 1, rows * GLYPH, cols * GLYPH).clamp_(0, 1)


def hog_picture(hog: HOG, images: torch.Tensor) -> torch.Tensor:
    """uint8 `[3, H, W]`: each image (the part HOG covers, enlarged) beside its HOG cells."""
    lines = glyphs(hog, images)
    height, width = lines.shape[2:]
    covered = images[:, :, : height // GLYPH * hog.cell_size, : width // GLYPH * hog.cell_size].cpu().float() / 255
    enlarged = F.interpolate(covered, size=(height, width), mode="nearest")
    tiles = torch.stack([enlarged, lines.expand(-1, enlarged.shape[1], -1, -1)], 1).flatten(0, 1)
    title = f"HOG, {hog.cell_size}x{hog.cell_size}-pixel cells: lines along edges, brighter = stronger"
    return visuals.picture(tiles, 8, title=title)


def network_picture(network: NetworkFeatures, images: torch.Tensor) -> torch.Tensor:
    """uint8 `[3, H, W]`: each image beside its activations at the network's layer, as a square grid of cells
    (row by row, the unused end of the last row black), brighter = larger, on one scale for all the images."""
    activations = network(images.to(network.device)).cpu()
    n, size = activations.shape
    side = math.ceil(math.sqrt(size))
    low, high = activations.min(), activations.max()
    scaled = (activations - low) / (high - low).clamp_min(1e-12)
    grid = F.pad(scaled, (0, side * side - size)).view(n, 1, side, side)
    shown = images.cpu().float() / 255
    height, width = max(shown.shape[2], side * 4), max(shown.shape[3], side * 4)
    enlarged = F.interpolate(shown, size=(height, width), mode="nearest")
    cells = F.interpolate(grid, size=(height, width), mode="nearest").expand(-1, shown.shape[1], -1, -1)
    tiles = torch.stack([enlarged, cells], 1).flatten(0, 1)
    where = f"the input of {network.layer_name}" if network.takes_input else network.layer_name
    title = f"network features: {where}, {size:,} numbers as a {side}x{side} grid, brighter = larger"
    return visuals.picture(tiles, 8, title=title)


def feature_pictures(features: Features, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """TensorBoard pictures `{tag: uint8 [3, H, W]}` of what the run's extractors see in these images."""
    # Not imported here: the config checks import every picture plug-in, and features.network loads torchvision,
    # which a run without a network among its features (HOG, a bag of words) never needs. A network extractor is
    # built from that module, so where there is one the module is loaded.
    network = sys.modules.get("visionlab.features.network")
    found: dict[str, torch.Tensor] = {}
    for name, extractor in features.extractors.items():
        if isinstance(extractor, HOG):
            found["features/hog_cells"] = hog_picture(extractor, images)
        elif isinstance(extractor, BagOfWords) and extractor.fitted_on:  # its codebook, once learned on the train part
            found[f"features/{name}_codebook"] = codebook_picture(extractor)
        elif network is not None and isinstance(extractor, network.NetworkFeatures):
            found["features/network_activations"] = network_picture(extractor, images)
    return found
