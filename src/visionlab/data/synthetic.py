"""A seeded, learnable image dataset generated in memory, so the default job needs no download."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from visionlab.data.base import ImageDataset, LabeledImages, RawData
from visionlab.errors import UserError


@dataclass
class Synthetic(ImageDataset):
    """Each class is a smooth random template; an image is its template, shifted and noisy.

    The templates share a common component and the noise is strong, so a linear model
    learns it only partly while a CNN does well: curves that go somewhere in seconds.
    """

    shape: list[int] = field(default_factory=lambda: [1, 28, 28])
    num_classes: int = 10
    train_size: int = 5000  # how many images to generate
    test_size: int = 1000
    noise: float = 0.5
    max_shift: int = 3
    seed: int = 0

    def read(self) -> RawData:
        for key in ("train_size", "test_size"):
            size = getattr(self, key)
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise UserError(f"dataset.{key}={size!r} is invalid: use a whole number of at least 1")
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
