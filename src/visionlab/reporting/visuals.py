"""Pictures of what a model sees and learned, as uint8 RGB images `[3, H, W]` for TensorBoard.

Everything here is drawing only: CPU tensors in, an image out. Which pictures a run logs, and
when, is the job of `reporting/pictures/`. Tiles are laid out as `torchvision.utils.make_grid` does and
zoomed by whole pixels; Pillow writes the words (class names, captions, titles) around them in
its built-in font. A picture takes milliseconds and imports no plotting library: importing
matplotlib would cost every run's start-up more than the pictures themselves, for a grid of squares
and some text.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

PAD = 2  # image pixels of white between tiles (1 for tiles under 14 pixels, such as conv kernels)
TILE_PX = 84  # screen pixels a tile's longer side is zoomed to (whole multiples only, so pixels stay square)
CAPTION_PX = 26  # screen pixels of white under each tile for its caption: two lines of SMALL_TEXT
SMALL_TEXT, TEXT, TITLE_TEXT = 10, 11, 13  # font sizes, in pixels: captions and counts, labels, titles
GAP = 5  # screen pixels between words and what they label, and around the picture's edge
MATRIX_PX = 360  # a confusion matrix's side, in screen pixels (more for many classes: cells stay >= MIN_CELL_PX)
MIN_CELL_PX = 30
ANNOTATE_UP_TO = 20  # confusion matrices with more classes than this show colours only, no counts
# ColorBrewer's "Blues", white to dark blue: matplotlib's Blues colormap is these nine, evenly spaced.
BLUES = ("f7fbff", "deebf7", "c6dbef", "9ecae1", "6baed6", "4292c6", "2171b5", "08519c", "08306b")


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


def floor_percent(share: float) -> str:
    """0.9996 -> "99.9%": rounded down, so a confidence short of certainty never reads as 100%."""
    return f"{math.floor(share * 1000) / 10:g}%"


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

    torchvision's `make_grid` layout, without importing torchvision: it loads torch._dynamo, which would add
    to every run's start-up and memory, for a reshape.
    """
    if tiles.shape[1] == 1:
        tiles = tiles.expand(-1, 3, -1, -1)
    n, c, h, w = tiles.shape
    columns = min(nrow, n)
    rows = -(-n // columns)
    tiles = F.pad(tiles, (padding, 0, padding, 0), value=pad_value)  # each tile's top and left margin
    # blanks fill the last row
    tiles = torch.cat([tiles, tiles.new_full((rows * columns - n, *tiles.shape[1:]), pad_value)])
    out = (
        tiles.view(rows, columns, c, h + padding, w + padding)
        .permute(2, 0, 3, 1, 4)
        .reshape(c, rows * (h + padding), columns * (w + padding))
    )
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
    tiles_image = _pil(image).resize((image.shape[2] * zoom, image.shape[1] * zoom), Image.NEAREST)
    origins = (tile_origins(n, nrow, height + below, width, padding) * zoom).tolist()  # screen pixels
    tile_h, tile_w = height * zoom, width * zoom
    columns = min(nrow, n)
    font, small, big = _font(TEXT), _font(SMALL_TEXT), _font(TITLE_TEXT)
    rotate = _longest(col_labels, font) > (width + padding) * zoom - GAP  # too wide to sit under its tile

    left = _longest(row_labels, font) + 2 * GAP if row_labels else 0
    top = _line_height(big) + 2 * GAP if title else 0
    bottom = (_longest(col_labels, font) if rotate else _line_height(font)) + 2 * GAP if col_labels else 0
    # a long title widens the picture
    canvas_width = max(left + tiles_image.width, round(big.getlength(title)) + 2 * GAP)
    canvas = Image.new("RGB", (canvas_width, top + tiles_image.height + bottom), "white")
    canvas.paste(tiles_image, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((canvas.width / 2, GAP), title, fill="black", font=big, anchor="ma")
    for row, label in enumerate(row_labels):
        draw.text(
            (left - GAP, top + origins[row * columns][0] + tile_h / 2), label, fill="black", font=font, anchor="rm"
        )
    for column, label in enumerate(col_labels):
        centre, y = left + origins[column][1] + tile_w / 2, top + tiles_image.height + GAP
        if rotate:
            _draw_upright(canvas, (centre, y), label, font, anchor="top")
        else:
            draw.text((centre, y), label, fill="black", font=font, anchor="ma")
    for (y, x), caption, color in zip(origins, captions, caption_colors or ["black"] * n):
        draw.multiline_text(
            (left + x + tile_w / 2, top + y + tile_h + below * zoom / 2),
            caption,
            fill=color,
            font=small,
            anchor="mm",
            align="center",
            spacing=1,
        )
    return _tensor(canvas)


def confusion_picture(matrix: torch.Tensor, classes: Sequence[str], title: str) -> torch.Tensor:
    """The confusion matrix (rows: true class, columns: predicted) as a heat map with the counts written in.

    The colour is each row's share, so the diagonal reads as each class's accuracy whatever the
    class sizes; the numbers are the counts, shown when there are few enough classes to read them.
    """
    counts = matrix.double()
    shares = counts / counts.sum(1, keepdim=True).clamp_min(1)
    c = len(classes)
    cell = max(MIN_CELL_PX, math.ceil(MATRIX_PX / c))
    side = cell * c
    font, small, big = _font(TEXT), _font(SMALL_TEXT), _font(TITLE_TEXT)
    names = _longest(classes, font)
    rotate = names > cell - GAP  # too wide to sit under its column
    line = _line_height(font)
    lines = [title, "colour: share of the true class; numbers: counts"]

    left = 3 * GAP + line + names  # "true class", then the class names
    top = 2 * GAP + 2 * _line_height(big)
    bottom = 3 * GAP + (names if rotate else line) + line  # the class names, then "predicted class"
    width = max(left + side + 2 * GAP, max(round(big.getlength(s)) for s in lines) + 2 * GAP)
    canvas = Image.new("RGB", (width, top + side + bottom), "white")
    canvas.paste(_pil(blues(shares).permute(2, 0, 1)).resize((side, side), Image.NEAREST), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left - 1, top - 1, left + side, top + side), outline="dimgray")
    draw.multiline_text((left + side / 2, GAP), "\n".join(lines), fill="black", font=big, anchor="ma", align="center")
    for index, name in enumerate(classes):
        middle = (index + 0.5) * cell
        draw.text((left - GAP, top + middle), name, fill="black", font=font, anchor="rm")
        if rotate:
            _draw_upright(canvas, (left + middle, top + side + GAP), name, font, anchor="top")
        else:
            draw.text((left + middle, top + side + GAP), name, fill="black", font=font, anchor="ma")
    draw.text((left + side / 2, canvas.height - GAP), "predicted class", fill="black", font=font, anchor="md")
    _draw_upright(canvas, (GAP + line / 2, top + side / 2), "true class", font, anchor="middle")
    if c <= ANNOTATE_UP_TO:
        for true, predicted in counts.nonzero().tolist():
            draw.text(
                (left + (predicted + 0.5) * cell, top + (true + 0.5) * cell),
                f"{int(counts[true, predicted])}",
                fill="white" if shares[true, predicted] > 0.5 else "black",
                font=small,
                anchor="mm",
            )
    return _tensor(canvas)


CHART_PX = (560, 340)  # a line chart's plot area (width, height), in screen pixels
LINE, BAND, DOTS = "#" + BLUES[7], "#" + BLUES[2], "#" + BLUES[4]  # the mean, its ± band, the single values


@dataclass
class ChartPoints:
    """Where `line_chart` drew each point, in the picture's pixels (x, y): for checking what it shows."""

    line: list[tuple[float, float]]
    dots: list[tuple[float, float]]


def line_chart(
    x: Sequence[float],
    y: Sequence[float],
    *,
    title: str,
    x_label: str,
    y_label: str,
    band: Sequence[float | None] = (),
    dots: Sequence[Sequence[float]] = (),
    log_x: bool = False,
    x_ticks: Sequence[tuple[float, str]] = (),
    markers: bool = True,
    mark: tuple[float, str] | None = None,
) -> tuple[torch.Tensor, ChartPoints]:
    """y against x as a line with a marker at each point, as one uint8 image, and where each point went.

    `band[i]` (None: none there) shades y[i] ± band[i]; `dots[i]` are single values drawn at x[i] (a
    mean's folds, say); `x_ticks` (position, label) replace the numeric ticks (choices, exact values).
    `markers=False` draws the line alone (a dense curve); `mark` (x, label) draws a labelled vertical line.
    """
    font, small, big = _font(TEXT), _font(SMALL_TEXT), _font(TITLE_TEXT)
    scale = math.log10 if log_x else float
    xs = [scale(v) for v in x]
    halves = [b or 0.0 for b in band] or [0.0] * len(y)
    values = [v + sign * b for v, b in zip(y, halves) for sign in (-1, 1)] + [v for group in dots for v in group]
    pad = 0.03 * (max(values) - min(values))  # no point on the frame
    y_ticks = nice_ticks(min(values) - pad, max(values) + pad)
    low, high = y_ticks[0], y_ticks[-1]
    if x_ticks:
        ticks = list(x_ticks)
    elif log_x:
        ticks = [(10.0**e, f"{10.0**e:g}") for e in range(math.floor(min(xs)), math.ceil(max(xs)) + 1)]
    else:
        ticks = [(v, f"{v:g}") for v in nice_ticks(min(x), max(x))]
    ends = xs + [scale(position) for position, _ in ticks]
    margin = 0.04 * ((max(ends) - min(ends)) or 1.0)
    left_x, right_x = min(ends) - margin, max(ends) + margin
    width, height = CHART_PX
    line_h = _line_height(font)
    left = 3 * GAP + line_h + _longest([f"{v:g}" for v in y_ticks], small)
    top = 2 * GAP + _line_height(big)
    canvas = Image.new("RGB", (left + width + 3 * GAP, top + height + 3 * GAP + 2 * line_h), "white")
    draw = ImageDraw.Draw(canvas)

    def px(xv: float, yv: float) -> tuple[float, float]:
        return left + (xv - left_x) / (right_x - left_x) * width, top + (high - yv) / (high - low) * height

    shaded = [(xv, v, b) for xv, v, b in zip(xs, y, band) if b is not None]
    upper, lower = [px(xv, v + b) for xv, v, b in shaded], [px(xv, v - b) for xv, v, b in shaded]
    if len(shaded) > 1:
        draw.polygon(upper + lower[::-1], fill=BAND)
    for value in y_ticks:
        _, yy = px(left_x, value)
        draw.line((left, yy, left + width, yy), fill="#e8e8e8")
        draw.text((left - GAP, yy), f"{value:g}", fill="black", font=small, anchor="rm")
    for position, label in ticks:
        xx, _ = px(scale(position), low)
        draw.line((xx, top + height, xx, top + height + GAP), fill="dimgray")
        draw.text((xx, top + height + GAP), label, fill="black", font=small, anchor="ma")
    draw.rectangle((left, top, left + width, top + height), outline="dimgray")
    dot_points = [px(xv, v) for xv, group in zip(xs, dots) for v in group]
    for xx, yy in dot_points:
        draw.ellipse((xx - 2, yy - 2, xx + 2, yy + 2), fill=DOTS)
    line_points = [px(xv, v) for xv, v in zip(xs, y)]
    if len(line_points) > 1:
        draw.line(line_points, fill=LINE, width=2)
    for xx, yy in line_points if markers else ():
        draw.ellipse((xx - 4, yy - 4, xx + 4, yy + 4), fill=LINE)
    if mark is not None:
        xx, _ = px(scale(mark[0]), low)
        draw.line((xx, top, xx, top + height), fill="#cb181d", width=1)
        draw.text((xx + GAP, top + GAP), mark[1], fill="#cb181d", font=font, anchor="la")
    draw.text((left + width / 2, GAP), title, fill="black", font=big, anchor="ma")
    draw.text((left + width / 2, canvas.height - GAP), x_label, fill="black", font=font, anchor="md")
    _draw_upright(canvas, (GAP + line_h / 2, top + height / 2), y_label, font, anchor="middle")
    return _tensor(canvas), ChartPoints(line_points, dot_points)


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten), at least two,
    from at or below `low` to at or above `high`."""
    if high == low:  # one value: a range around it
        low, high = low - (abs(low) or 1.0) / 10, high + (abs(high) or 1.0) / 10
    rough = math.floor(math.log10((high - low) / most))
    step = min(m * 10.0**e for e in (rough, rough + 1) for m in (1, 2, 5) if (high - low) / (m * 10.0**e) <= most)
    first = math.floor(low / step)
    return [round((first + i) * step, 12) for i in range(math.ceil(high / step) - first + 1)]


def blues(values: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] as `[..., 3]` uint8 colours, from white (0) to dark blue (1), through BLUES."""
    anchors = torch.tensor([list(bytes.fromhex(colour)) for colour in BLUES], dtype=torch.float64)
    position = values.double().clamp(0, 1) * (len(BLUES) - 1)
    low = position.floor().long().clamp_max(len(BLUES) - 2)
    weight = (position - low).unsqueeze(-1)
    return (anchors[low] * (1 - weight) + anchors[low + 1] * weight).round().to(torch.uint8)


@functools.cache
def _font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in font (Aileron), so a picture looks the same on every machine, fonts installed or not."""
    return ImageFont.load_default(size)


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _longest(labels: Sequence[str], font: ImageFont.FreeTypeFont) -> int:
    """The widest label's width in pixels (0 without labels): the margin it needs."""
    return max((math.ceil(font.getlength(label)) for label in labels), default=0)


def _draw_upright(
    canvas: Image.Image, xy: tuple[float, float], text: str, font: ImageFont.FreeTypeFont, anchor: str
) -> None:
    """Text turned to read upwards, centred on x;
    its end at y (anchor "top", under an axis) or its middle at y ("middle")."""
    stencil = Image.new("L", (_longest([text], font), _line_height(font)))
    ImageDraw.Draw(stencil).text((0, 0), text, fill=255, font=font)
    stencil = stencil.rotate(90, expand=True)
    x, y = xy
    top = y if anchor == "top" else y - stencil.height / 2
    ImageDraw.Draw(canvas).bitmap((round(x - stencil.width / 2), round(top)), stencil, fill="black")


def _pil(image: torch.Tensor) -> Image.Image:
    """`[3, H, W]`, floats in [0, 1] or uint8, as a Pillow RGB image."""
    if image.dtype != torch.uint8:
        image = image.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def _tensor(canvas: Image.Image) -> torch.Tensor:
    return (
        torch.frombuffer(bytearray(canvas.tobytes()), dtype=torch.uint8)
        .view(canvas.height, canvas.width, 3)
        .permute(2, 0, 1)
        .contiguous()
    )
