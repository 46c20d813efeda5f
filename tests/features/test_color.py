"""Colour histograms on images whose answer is known pixel by pixel."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from matplotlib.colors import rgb_to_hsv

from tests.conftest import config_error
from visionlab.errors import UserError
from visionlab.features.color import ColorHistogram, hue_bin

# (R, G, B) -> hue in turns: the six primaries and secondaries, and grey (hue 0 by convention).
KNOWN_HUES = {
    (255, 0, 0): Fraction(0),
    (255, 255, 0): Fraction(1, 6),
    (0, 255, 0): Fraction(1, 3),
    (0, 255, 255): Fraction(1, 2),
    (0, 0, 255): Fraction(2, 3),
    (255, 0, 255): Fraction(5, 6),
    (128, 128, 128): Fraction(0),
    (255, 128, 0): Fraction(128, 255 * 6),
}


def image_of(pixels: list[tuple[int, int, int]]) -> torch.Tensor:
    """One uint8 image [1, 3, 1, len(pixels)] with these pixels in a row."""
    return torch.tensor(pixels, dtype=torch.uint8).T.reshape(1, 3, 1, len(pixels))


def exact_hue(r: int, g: int, b: int) -> Fraction:
    """matplotlib's rgb_to_hsv hue, in exact arithmetic."""
    top, delta = max(r, g, b), max(r, g, b) - min(r, g, b)
    if delta == 0:
        return Fraction(0)
    if b == top:
        sixths = 4 + Fraction(r - g, delta)
    elif g == top:
        sixths = 2 + Fraction(b - r, delta)
    else:
        sixths = Fraction(g - b, delta)
    return (sixths / 6) % 1


@pytest.mark.parametrize("bins", [6, 10, 12])
def test_hue_histogram_of_known_colours(bins):
    counts = [3, 1, 2, 1, 4, 1, 5, 2]  # pixels of each colour of KNOWN_HUES, in order
    pixels = [colour for colour, n in zip(KNOWN_HUES, counts) for _ in range(n)]
    histogram = ColorHistogram(bins=bins, space="hsv")(image_of(pixels))
    expected = torch.zeros(1, bins)
    for hue, n in zip(KNOWN_HUES.values(), counts):
        expected[0, int(hue * bins)] += n / len(pixels)  # int(): a hue on a bin edge starts that bin
    torch.testing.assert_close(histogram, expected)
    assert histogram.sum().item() == pytest.approx(1.0)


def test_hue_bins_are_exact_where_floating_point_would_round_across_an_edge():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    ours = hue_bin(images, 10)[:, 0].numpy()
    rgb = images.permute(0, 2, 3, 1).numpy().astype(int)
    exact = np.vectorize(lambda r, g, b: int(exact_hue(r, g, b) * 10))(rgb[..., 0], rgb[..., 1], rgb[..., 2])
    assert (ours == exact).all()
    # matplotlib's float64 hue agrees everywhere except on bin edges, which rounding can put one bin low.
    float_hue = rgb_to_hsv(images.permute(0, 2, 3, 1).numpy() / 255.0)[..., 0] * 10
    differ = ours != np.minimum(float_hue.astype(int), 9)
    assert np.allclose(float_hue[differ], np.round(float_hue[differ]), atol=1e-9)


def test_rgb_histogram_counts_each_channel_separately():
    pixels = [(0, 255, 100), (0, 255, 200), (255, 0, 16), (31, 32, 255)]
    histogram = ColorHistogram(bins=8, space="rgb")(image_of(pixels))  # levels 0-31 in bin 0, ..., 224-255 in bin 7
    expected = torch.zeros(3, 8)
    for r, g, b in pixels:
        for channel, level in enumerate((r, g, b)):
            expected[channel, level // 32] += 0.25
    torch.testing.assert_close(histogram, expected.view(1, 24))


def test_rgb_histogram_of_greyscale_images_is_one_intensity_histogram():
    images = torch.tensor([[0, 0, 255, 128]], dtype=torch.uint8).view(1, 1, 1, 4)
    torch.testing.assert_close(ColorHistogram(bins=2, space="rgb")(images), torch.tensor([[0.5, 0.5]]))


def test_hue_of_greyscale_images_and_bad_parameters_are_one_line_errors():
    with pytest.raises(UserError, match=r"features.color.space=hsv needs colour images, these have 1 channel"):
        ColorHistogram(space="hsv")(torch.zeros(1, 1, 4, 4, dtype=torch.uint8))
    assert "features.color.space='lab' is unknown: use one of hsv, rgb" in config_error(
        ["features=color_hist", "features.color.space=lab"]
    )
    assert "features.color.bins=0 is invalid: use a whole number from 1 to 256" in config_error(
        ["features=color_hist", "features.color.bins=0"]
    )
