"""Test-time augmentation (tta.py): the averages it promises, computed by hand, and through evaluate()."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from visionlab.data import DeviceSplit
from visionlab.training.loop import evaluate
from visionlab.tta import ViewAverage, with_tta


class PixelScores(nn.Module):
    """Class scores that read three single pixels: anything but mirror- or shift-invariant."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([x[:, 0, 0, 0], x[:, 0, 1, 3], x[:, 0, 3, 2]], dim=1)


def reflect(i: int, n: int) -> int:
    return -i if i < 0 else 2 * (n - 1) - i if i >= n else i


def shifted(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """x moved so that pixel (i, j) shows x[i + dy, j + dx], reflected at the borders, pixel by pixel."""
    h, w = x.shape[-2:]
    out = torch.empty_like(x)
    for i in range(h):
        for j in range(w):
            out[..., i, j] = x[..., reflect(i + dy, h), reflect(j + dx, w)]
    return out


def test_flip_averages_the_scores_of_the_image_and_its_mirror():
    x = torch.arange(32.0).view(2, 1, 4, 4)
    model = PixelScores()
    expected = 0.5 * (model(x) + model(x.flip(-1)))
    assert torch.equal(with_tta(model, "flip")(x), expected)


def test_flip_translate_adds_the_one_pixel_shifts_at_half_weight():
    x = torch.randn(3, 1, 4, 4)
    model = PixelScores()

    def flip(images):
        return 0.5 * (model(images) + model(images.flip(-1)))

    expected = 0.5 * flip(x) + 0.25 * flip(shifted(x, -1, -1)) + 0.25 * flip(shifted(x, 1, 1))
    torch.testing.assert_close(with_tta(model, "flip_translate")(x), expected)


def test_none_is_the_model_itself():
    model = PixelScores()
    assert with_tta(model, "none") is model and isinstance(with_tta(model, "flip"), ViewAverage)


@pytest.mark.parametrize("mode", ["flip", "flip_translate"])
def test_evaluate_scores_the_averaged_views(mode):
    """Where a run calls it: evaluate(with_tta(model, mode), split, ...). A model that tells a bright left
    half from a bright right half is right on every image alone, and at chance on their mirror average."""
    images = torch.zeros(20, 1, 4, 4, dtype=torch.uint8)
    images[:10, :, :, :2] = 200  # class 0: bright left half
    images[10:, :, :, 2:] = 200  # class 1: bright right half
    split = DeviceSplit(images, torch.tensor([0] * 10 + [1] * 10), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.0, 1, -1, -1] * 4, [-1.0, -1, 1, 1] * 4]))
    assert evaluate(model, split, None, 8)["acc"] == 1.0
    averaged = evaluate(with_tta(model, mode), split, None, 8)
    # equal scores: argmax takes class 0
    assert averaged["acc"] == 0.5 and averaged["confusion"].tolist() == [[10, 0], [10, 0]]
