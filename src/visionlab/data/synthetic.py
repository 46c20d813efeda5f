"""A seeded, learnable image dataset generated in memory, so the default job needs no download."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import torch
import torch.nn.functional as F

from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.checks import Each, Number, Whole


@dataclass
class Synthetic(ImageDataset):
    """Each class is a smooth random template; an image is its template, shifted and noisy.

    The templates share a common component and the noise is strong, so a linear model
    learns it only partly while a CNN does well: curves that go somewhere in seconds.
    """

    shape: Annotated[list[int], Each(Whole(1), length=3, example="[1, 28, 28]")] = field(default_factory=lambda: [1, 28, 28])
    num_classes: Annotated[int, Whole(2)] = 10
    train_size: Annotated[int, Whole(1)] = 5000  # how many images to generate
    test_size: Annotated[int, Whole(1)] = 1000
    noise: Annotated[float, Number(ge=0, example=0.5)] = 0.5
    max_shift: Annotated[int, Whole(0, unit="pixels")] = 3
    seed: Annotated[int, Whole()] = 0

    def read(self) -> RawData:
        g = torch.Generator().manual_seed(self.seed)
        c, h, w = self.shape
        coarse = torch.rand(self.num_classes + 1, c, max(h // 4, 1), max(w // 4, 1), generator=g)
        smooth = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)
        templates = 0.5 * smooth[:-1] + 0.5 * smooth[-1:]  # the shared part makes classes overlap
        train = self._sample(templates, self.train_size, g)
        test = self._sample(templates, self.test_size, g)
        return RawData(train, test, [f"class_{i}" for i in range(self.num_classes)])

    def _sample(self, templates: torch.Tensor, n: int, g: torch.Generator) -> LabeledImages:
        labels = torch.randint(0, self.num_classes, (n,), generator=g)
        images = templates[labels]
        s = self.max_shift
        dy, dx = torch.randint(-s, s + 1, (2, n), generator=g)
        for sy in range(-s, s + 1):  # one roll per offset, not per image
            for sx in range(-s, s + 1):
                chosen = (dy == sy) & (dx == sx)
                images[chosen] = torch.roll(images[chosen], shifts=(sy, sx), dims=(2, 3))
        images = images + self.noise * torch.randn(images.shape, generator=g)
        pixels = (images.clamp(0, 1) * 255).round().to(torch.uint8)
        return LabeledImages(pixels, labels)
