"""Line charts as uint8 RGB images `[3, H, W]`, drawn with Pillow like the other pictures (no plotting library).

One chart: x against y for one or more series, an optional shaded band per series (mean ± std),
optional marked points, and a linear or log x axis with a few labelled ticks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from PIL import Image, ImageDraw

from visionlab.reporting.visuals import GAP, SMALL_TEXT, TEXT, TITLE_TEXT, _draw_upright, _font, _line_height, _tensor

WIDTH, HEIGHT = 560, 340  # the plotting area, in screen pixels
COLOURS = ("#2171b5", "#cb181d", "#238b45", "#6a51a3", "#d94801")


@dataclass
class Series:
    name: str
    x: Sequence[float]
    y: Sequence[float]
    band: Sequence[float] | None = None  # half-width of a shaded band around y (a std), or None
    points: bool = False  # also draw a dot at every value (few values: a sweep's grid)


@dataclass
class Mark:
    x: float
    y: float
    label: str


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    marks: list[Mark] = field(default_factory=list)
    log_x: bool = False


def draw(chart: Chart):
    """The chart as a uint8 `[3, H, W]` tensor."""
    font, small, big = _font(TEXT), _font(SMALL_TEXT), _font(TITLE_TEXT)
    xs = [x for s in chart.series for x in s.x] + [m.x for m in chart.marks]
    ys = [y + sign * (s.band[i] if s.band else 0) for s in chart.series for i, y in enumerate(s.y) for sign in (-1, 1)]
    ys += [m.y for m in chart.marks]
    to_axis = (lambda v: math.log10(v)) if chart.log_x else (lambda v: v)
    x_lo, x_hi = padded(min(map(to_axis, xs)), max(map(to_axis, xs)))
    y_lo, y_hi = padded(min(ys), max(ys))
    left, top = 60, _line_height(big) + 2 * GAP
    legend = _line_height(font) + GAP if len(chart.series) > 1 else 0
    canvas = Image.new("RGB", (left + WIDTH + 3 * GAP, top + legend + HEIGHT + 2 * _line_height(font) + 3 * GAP), "white")
    d = ImageDraw.Draw(canvas)
    top += legend

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (to_axis(x) - x_lo) / (x_hi - x_lo) * WIDTH, top + HEIGHT - (y - y_lo) / (y_hi - y_lo) * HEIGHT)

    d.text((canvas.width / 2, GAP), chart.title, fill="black", font=big, anchor="ma")
    d.rectangle((left, top, left + WIDTH, top + HEIGHT), outline="#999999")
    for tick in ticks(x_lo, x_hi):
        x = left + (tick - x_lo) / (x_hi - x_lo) * WIDTH
        d.line((x, top + HEIGHT, x, top + HEIGHT + 4), fill="#999999")
        d.text((x, top + HEIGHT + 6), f"1e{tick:g}" if chart.log_x else f"{tick:g}", fill="black", font=small, anchor="ma")
    for tick in ticks(y_lo, y_hi):
        y = top + HEIGHT - (tick - y_lo) / (y_hi - y_lo) * HEIGHT
        d.line((left - 4, y, left, y), fill="#999999")
        d.text((left - 6, y), f"{tick:.4g}", fill="black", font=small, anchor="rm")
    d.text((left + WIDTH / 2, top + HEIGHT + _line_height(small) + 10), chart.x_label, fill="black", font=font, anchor="ma")
    _draw_upright(canvas, (GAP + _line_height(font) / 2, top + HEIGHT / 2), chart.y_label, font, anchor="middle")
    legend_x = left
    for colour, series in zip(COLOURS * len(chart.series), chart.series):
        line = [px(x, y) for x, y in zip(series.x, series.y)]
        if series.band:
            upper = [px(x, y + b) for x, y, b in zip(series.x, series.y, series.band)]
            lower = [px(x, y - b) for x, y, b in zip(series.x, series.y, series.band)]
            shade = Image.new("RGBA", canvas.size, (0, 0, 0, 0))
            ImageDraw.Draw(shade).polygon(upper + lower[::-1], fill=hex_rgba(colour, 60))
            canvas.paste(shade, (0, 0), shade)
            d = ImageDraw.Draw(canvas)
        if len(line) > 1:
            d.line(line, fill=colour, width=2)
        if series.points or len(line) == 1:
            for x, y in line:
                d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        if len(chart.series) > 1:
            d.line((legend_x, top - legend / 2 - 2, legend_x + 16, top - legend / 2 - 2), fill=colour, width=2)
            d.text((legend_x + 20, top - legend / 2 - 2), series.name, fill="black", font=small, anchor="lm")
            legend_x += 30 + font.getlength(series.name)
    for mark in chart.marks:
        x, y = px(mark.x, mark.y)
        d.ellipse((x - 5, y - 5, x + 5, y + 5), outline="#cb181d", width=2)
        d.text((x + 8, y - 8), mark.label, fill="#cb181d", font=font, anchor="ld")
    return _tensor(canvas)


def padded(lo: float, hi: float) -> tuple[float, float]:
    """The range with 5% room on each side (and some width when every value is the same)."""
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    room = (hi - lo) * 0.05
    return lo - room, hi + room


def ticks(lo: float, hi: float, wanted: int = 6) -> list[float]:
    """Round values between lo and hi, about `wanted` of them, at 1, 2 or 5 times a power of ten apart."""
    raw = (hi - lo) / wanted
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step) + 1)]


def hex_rgba(colour: str, alpha: int) -> tuple[int, int, int, int]:
    return (int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16), alpha)
