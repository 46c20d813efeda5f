"""Pictures of what the features see, one drawing per kind of extractor (features/ itself draws nothing).

HOG is drawn the usual way: in each cell, a line along the edge for every orientation bin, as
bright as its share. The lines are stencils, one per bin, so a batch of cell histograms becomes a
picture with one einsum: `[N, rows, cols, bins] x [bins, G, G]`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from visionlab.features import Features
from visionlab.features.bow import BagOfWords
from visionlab.features.hog import HOG
from visionlab.reporting import visuals
from visionlab.reporting.codebook import codebook_picture

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


def feature_pictures(features: Features, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """TensorBoard pictures `{tag: uint8 [3, H, W]}` of what the run's extractors see in these images."""
    found: dict[str, torch.Tensor] = {}
    for name, extractor in features.extractors.items():
        if isinstance(extractor, HOG):
            found["features/hog_cells"] = hog_picture(extractor, images)
        elif isinstance(extractor, BagOfWords) and extractor.fitted_on:  # its codebook, once learned on the train part
            found[f"features/{name}_codebook"] = codebook_picture(extractor)
    return found
