"""A seeded image dataset of visible shapes, generated in memory, so the default job needs no download.

One kind of shape per class (bars, strokes, a ring, a blob, a square, a cross, stripes, a checker),
drawn at a random place and size with pixel noise. A person sees the classes at a glance, so the
pictures of the default job show what they are meant to: templates, filters, mistakes. Position
varies, so a linear classifier (one template per class) does worst, an MLP better and a CNN, which
looks for the same stroke everywhere, best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated

import torch

from visionlab.checks import Each, Number, Whole
from visionlab.data.base import ImageDataset, LabeledImages, Plan, RawData

DRAWING = 20  # bytes per pixel while a split is drawn: its float32 canvas, noise, and the steps between them
SHAPES = (
    "horizontal_bar",
    "vertical_bar",
    "diagonal",
    "antidiagonal",
    "ring",
    "blob",
    "square",
    "cross",
    "stripes",
    "checker",
)


@dataclass
class Synthetic(ImageDataset):
    shape: Annotated[list[int], Each(Whole(1), length=3, example="[1, 28, 28]")] = field(
        default_factory=lambda: [1, 28, 28]
    )
    num_classes: Annotated[int, Whole(2, len(SHAPES))] = 10  # the first N kinds of SHAPES
    train_size: Annotated[int, Whole(1)] = 5000  # how many images to generate
    test_size: Annotated[int, Whole(1)] = 1000
    noise: Annotated[float, Number(ge=0, example=0.3)] = 0.3  # std of the pixel noise, on a 0-1 scale
    max_shift: Annotated[int, Whole(0, unit="pixels")] = 6  # how far a shape's centre may be from the image's
    seed: Annotated[int, Whole()] = 0

    def plan(self) -> Plan:
        c, h, w = self.shape
        return Plan(
            (c, h, w),
            self.train_size,
            self.test_size,
            self.num_classes,
            "dataset.shape",
            DRAWING * max(self.train_size, self.test_size) * c * h * w,
        )

    def read(self) -> RawData:
        g = torch.Generator().manual_seed(self.seed)
        train = self._sample(self.train_size, g)
        test = self._sample(self.test_size, g)
        return RawData(train, test, list(SHAPES[: self.num_classes]))

    def _sample(self, n: int, g: torch.Generator) -> LabeledImages:
        c, h, w = self.shape
        labels = torch.randint(0, self.num_classes, (n,), generator=g)
        side = min(h, w)
        centre = (torch.rand(n, 2, generator=g) * 2 - 1) * self.max_shift
        size = side * (0.2 + 0.15 * torch.rand(n, generator=g))  # half the extent of a shape, in pixels
        thick = max(side * 0.06, 1.0)
        ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
        xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
        dy = ys.view(1, h, 1) - centre[:, 0].view(n, 1, 1)
        dx = xs.view(1, 1, w) - centre[:, 1].view(n, 1, 1)
        s = size.view(n, 1, 1)
        period = (side / 5) * (1 + 0.3 * torch.rand(n, 1, 1, generator=g))
        phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
        images = torch.zeros(n, h, w)
        for kind, name in enumerate(SHAPES[: self.num_classes]):
            chosen = labels == kind
            if chosen.any():
                images[chosen] = _draw(name, dy[chosen], dx[chosen], s[chosen], thick, period[chosen], phase[chosen])
        tint = 0.6 + 0.4 * torch.rand(n, c, 1, 1, generator=g) if c > 1 else torch.ones(n, 1, 1, 1)
        images = images.unsqueeze(1) * tint + self.noise * torch.randn(n, c, h, w, generator=g)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return LabeledImages(pixels, labels)


def _draw(
    name: str, dy: torch.Tensor, dx: torch.Tensor, s: torch.Tensor, t: float, period: torch.Tensor, phase: torch.Tensor
) -> torch.Tensor:
    """Intensity in [0, 1] of one kind of shape, for images whose pixel offsets from the centre are dy, dx."""
    r = (dy.square() + dx.square()).sqrt()
    along, across = (dx + dy) / math.sqrt(2), (dx - dy) / math.sqrt(2)
    masks = {
        "horizontal_bar": lambda: (dy.abs() < t) & (dx.abs() < s),
        "vertical_bar": lambda: (dx.abs() < t) & (dy.abs() < s),
        "diagonal": lambda: (across.abs() < t) & (along.abs() < s),
        "antidiagonal": lambda: (along.abs() < t) & (across.abs() < s),
        "ring": lambda: (r - s * 0.8).abs() < t,
        "blob": lambda: r < s * 0.7,
        "square": lambda: (dx.abs().maximum(dy.abs()) - s * 0.75).abs() < t,
        "cross": lambda: ((dx.abs() < t) & (dy.abs() < s)) | ((dy.abs() < t) & (dx.abs() < s)),
        "stripes": lambda: (torch.sin(2 * math.pi * dy / period + phase) > 0.3) & (r < s * 1.2),
        "checker": lambda: (
            (torch.sin(2 * math.pi * dy / period + phase) * torch.sin(2 * math.pi * dx / period + phase) > 0)
            & (r < s * 1.2)
        ),
    }
    return masks[name]().float()
