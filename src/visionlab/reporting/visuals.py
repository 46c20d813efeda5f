"""Pictures of what a model sees and learned, as uint8 RGB images `[3, H, W]` for TensorBoard.

Everything here is drawing only: CPU tensors in, an image out. Which pictures a run logs, and
when, is `visual_log.py`'s job. Tiles are laid out as `torchvision.utils.make_grid` does; matplotlib
only adds the words (class names, captions, titles) around one image, which keeps a picture of
a hundred tiles as cheap to draw as a picture of one.

matplotlib is imported on the first picture, not with this module: it takes about half a second,
which a run with every picture switched off should not pay.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

DPI = 100
PAD = 2  # image pixels of white between tiles (1 for tiles under 14 pixels, such as conv kernels)
TILE_PX = 84  # screen pixels a tile's longer side is zoomed to (whole multiples only, so pixels stay square)
CAPTION_PX = 26  # screen pixels of white under each tile for its caption: two lines of FONT_SIZE
FONT_SIZE = 7
ANNOTATE_UP_TO = 20  # confusion matrices with more classes than this show colours only, no counts


def as_tiles(weight: torch.Tensor, image_shape: Sequence[int]) -> torch.Tensor:
    """A first layer's weights `[units, ...]` as images `[N, C, H, W]` to look at, each rescaled to [0, 1].

    A linear unit's weight row has one number per input pixel, so it reshapes to the image shape:
    the template it matches. A conv kernel `[in, k, k]` is already a small image. With 1 or 3
    channels a tile is grey or colour; any other channel count gets one grey tile per channel.
    """
    tiles = weight.detach().float().cpu().reshape(len(weight), *image_shape)
    if tiles.shape[1] not in (1, 3):
        tiles = tiles.reshape(-1, 1, *tiles.shape[2:])
    return rescaled(tiles)


def rescaled(tiles: torch.Tensor) -> torch.Tensor:
    """Each tile stretched to [0, 1] on its own: a weight's sign and pattern show, its size does not."""
    low = tiles.amin(dim=(1, 2, 3), keepdim=True)
    high = tiles.amax(dim=(1, 2, 3), keepdim=True)
    return (tiles - low) / (high - low).clamp_min(1e-12)


def first_per_class(labels: torch.Tensor, num_classes: int, per_class: int) -> torch.Tensor:
    """Indices `[num_classes, per_class]` of the first images of each class, -1 where a class has fewer."""
    rows = torch.full((num_classes, per_class), -1, dtype=torch.long)
    for c in range(num_classes):
        found = (labels == c).nonzero().flatten()[:per_class]
        rows[c, : len(found)] = found
    return rows


def grid(tiles: torch.Tensor, nrow: int, padding: int, pad_value: float) -> torch.Tensor:
    """Tiles `[N, C, H, W]`, `nrow` to a row, `padding` pixels of `pad_value` around each, as RGB `[3, H', W']`.

    torchvision's `make_grid` layout, without importing torchvision: that costs a second of every
    run's start-up and 170 MB of memory (it loads torch._dynamo), for a reshape.
    """
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    n, c, h, w = tiles.shape
    columns = min(nrow, n)
    rows = -(-n // columns)
    tiles = F.pad(tiles, (padding, 0, padding, 0), value=pad_value)  # each tile's top and left margin
    tiles = torch.cat([tiles, tiles.new_full((rows * columns - n, *tiles.shape[1:]), pad_value)])  # blanks fill the last row
    out = tiles.view(rows, columns, c, h + padding, w + padding).permute(2, 0, 3, 1, 4).reshape(c, rows * (h + padding), columns * (w + padding))
    return F.pad(out, (0, padding, 0, padding), value=pad_value)  # the bottom and right margin


def tile_origins(n: int, nrow: int, height: int, width: int, padding: int = PAD) -> torch.Tensor:
    """(top, left) pixel of each of n tiles in `grid(tiles, nrow, padding)`'s layout, as `[n, 2]`."""
    columns = min(nrow, n)
    k = torch.arange(n)
    return torch.stack([(k // columns) * (height + padding) + padding, (k % columns) * (width + padding) + padding], 1)


def picture(
    tiles: torch.Tensor,
    nrow: int,
    *,
    title: str = "",
    row_labels: Sequence[str] = (),
    col_labels: Sequence[str] = (),
    captions: Sequence[str] = (),
    caption_colors: Sequence[str] = (),
) -> torch.Tensor:
    """Tiles `[N, C, H, W]` with values in [0, 1], `nrow` to a row, labelled, as one uint8 image.

    row_labels name each row (left), col_labels each column (below), captions each tile (under it).
    Every image pixel becomes a square of whole screen pixels, so small kernels stay crisp.
    """
    n, _, height, width = tiles.shape
    zoom = max(1, round(TILE_PX / max(height, width)))
    padding = PAD if max(height, width) >= 14 else 1
    below = math.ceil(CAPTION_PX / zoom) if captions else 0  # caption space, in image pixels
    image = grid(F.pad(tiles, (0, 0, 0, below), value=1.0), nrow, padding, 1.0)
    origins = tile_origins(n, nrow, height + below, width, padding).float()
    columns = min(nrow, n)
    rotate = _text_inches(col_labels, FONT_SIZE + 1) > (width + padding) * zoom / DPI  # too wide to sit under its tile
    ax = _axes(
        image.shape[2] * zoom / DPI, image.shape[1] * zoom / DPI,
        left=_text_inches(row_labels, FONT_SIZE + 1), bottom=_text_inches(col_labels, FONT_SIZE + 1) if rotate else 0.25 * bool(col_labels),
        top=0.3 * bool(title),
    )
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    centre_y, centre_x = (height - 1) / 2, (width - 1) / 2
    ax.set_yticks(origins[::columns, 0].add(centre_y).tolist() if row_labels else [], list(row_labels), fontsize=FONT_SIZE + 1)
    ax.set_xticks(origins[:columns, 1].add(centre_x).tolist() if col_labels else [], list(col_labels),
                  fontsize=FONT_SIZE + 1, rotation=90 if rotate else 0)
    ax.tick_params(length=0)
    ax.spines[:].set_visible(False)
    for (top, left), caption, color in zip(origins.tolist(), captions, caption_colors or ["black"] * n):
        ax.text(left + centre_x, top + height + (below - 1) / 2, caption, ha="center", va="center",
                fontsize=FONT_SIZE, color=color, linespacing=1.0)
    if title:
        ax.set_title(title, fontsize=FONT_SIZE + 2)
    return rendered(ax.figure)


def confusion_picture(matrix: torch.Tensor, classes: Sequence[str], title: str) -> torch.Tensor:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map with the counts written in.

    The colour is each row's share, so the diagonal reads as each class's accuracy whatever the
    class sizes; the numbers are the counts, shown when there are few enough classes to read them.
    """
    counts = matrix.double()
    shares = counts / counts.sum(1, keepdim=True).clamp_min(1)
    c = len(classes)
    side = max(3.5, 0.4 * c)
    rotate = _text_inches(classes, 8) > side / c  # too wide to sit under its column
    ax = _axes(side, side, left=_text_inches(classes, 8) + 0.3, bottom=(0.75 * _text_inches(classes, 8) if rotate else 0.2) + 0.3, top=0.5)
    ax.imshow(shares.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(c), list(classes), fontsize=8, rotation=45 if rotate else 0, ha="right" if rotate else "center",
                  rotation_mode="anchor")
    ax.set_yticks(range(c), list(classes), fontsize=8)
    ax.set_xlabel("predicted class", fontsize=9)
    ax.set_ylabel("true class", fontsize=9)
    ax.set_title(f"{title}\ncolour: share of the true class; numbers: counts", fontsize=9)
    if c <= ANNOTATE_UP_TO:
        for true, predicted in counts.nonzero().tolist():
            ax.text(predicted, true, f"{int(counts[true, predicted])}", ha="center", va="center", fontsize=FONT_SIZE,
                    color="white" if shares[true, predicted] > 0.5 else "black")
    return rendered(ax.figure)


def _text_inches(labels: Sequence[str], font_size: float) -> float:
    """About how wide the longest label is, in inches (0 without labels): the margin it needs."""
    longest = max((len(s) for s in labels), default=0)
    return 0.1 + longest * font_size * 0.62 / 72 if longest else 0.05


def _axes(width: float, height: float, *, left: float, bottom: float, top: float):
    """One Axes of exactly width x height inches inside a figure with these margins (inches).

    Margins are set by hand rather than by matplotlib's constrained layout, which measures every
    label and would take most of a picture's drawing time.
    """
    from matplotlib.figure import Figure

    right = 0.1
    fig = Figure(figsize=(left + width + right, bottom + height + top + 0.05), dpi=DPI)
    total_w, total_h = fig.get_size_inches()
    return fig.add_axes((left / total_w, bottom / total_h, width / total_w, height / total_h))


def rendered(fig) -> torch.Tensor:
    """A matplotlib Figure drawn off-screen (Agg: no display, no pyplot state) as uint8 `[3, H, W]`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return torch.from_numpy(np.array(canvas.buffer_rgba())[..., :3]).permute(2, 0, 1).contiguous()
