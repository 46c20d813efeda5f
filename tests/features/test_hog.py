"""HOG: the numbers of skimage.feature.hog for the same parameters, and the orientation conventions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.conftest import config_error
from visionlab.errors import UserError
from visionlab.features.hog import HOG
from visionlab.reporting.feature_pictures import glyphs, stencils

skimage_feature = pytest.importorskip(
    "skimage.feature", reason="scikit-image is in the test extra: pip install -e '.[test]'"
)

# float32 against skimage's float64: observed differences are below 1e-7 on values in [0, 1].
TOLERANCE = 1e-5


def sample_images(channels: int, size: int) -> torch.Tensor:
    """A handful of 8-bit images: pure noise (every orientation), smooth blobs (small and tied gradients), flat grey."""
    g = torch.Generator().manual_seed(channels * 100 + size)
    noise = torch.randint(0, 256, (3, channels, size, size), generator=g, dtype=torch.uint8)
    coarse = torch.rand(3, channels, size // 4, size // 4, generator=g)
    smooth = (
        (F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)
    )
    flat = torch.full((1, channels, size, size), 128, dtype=torch.uint8)
    return torch.cat([noise, smooth, flat])


def skimage_hog(images: torch.Tensor, hog: HOG) -> np.ndarray:
    options = dict(
        orientations=hog.bins,
        pixels_per_cell=(hog.cell_size,) * 2,
        cells_per_block=(hog.block_size,) * 2,
        block_norm=hog.block_norm,
        feature_vector=True,
    )
    if images.shape[1] == 1:
        return np.stack([skimage_feature.hog(image[0], **options) for image in images.numpy()])
    return np.stack(
        [skimage_feature.hog(image.transpose(1, 2, 0), channel_axis=-1, **options) for image in images.numpy()]
    )


@pytest.mark.parametrize(
    "channels,size,params",
    [
        (3, 32, {}),  # CIFAR-10 at the defaults: 8x8 cells, 9 bins, 2x2 blocks, L2-Hys
        (1, 28, {}),  # MNIST: 3x3 whole cells, the last 4 rows and columns left out as skimage does
        (1, 28, {"cell_size": 7, "block_size": 3, "block_norm": "L2"}),
        (3, 32, {"cell_size": 4, "bins": 12, "block_norm": "L1"}),
        (3, 30, {"cell_size": 6, "bins": 6, "block_size": 1, "block_norm": "L1-sqrt"}),
    ],
)
def test_hog_matches_skimage(channels, size, params):
    hog = HOG(**params)
    images = sample_images(channels, size)
    ours = hog(images)
    expected = skimage_hog(images, hog)
    assert ours.dtype == torch.float32 and tuple(ours.shape) == expected.shape == (
        len(images),
        hog.size((channels, size, size)),
    )
    assert np.abs(ours.double().numpy() - expected).max() < TOLERANCE
    assert ours[-1].abs().max() == 0  # a flat image has no gradient anywhere


def test_cells_hold_the_mean_gradient_magnitude_per_orientation():
    """A vertical step from 0 to 200: at the two columns beside it the gradient is 200 along the row,
    orientation 0 degrees."""
    image = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    image[..., 8:] = 200
    cells = HOG(cell_size=8, bins=9, block_norm="none").cells(image)  # [1, 2, 2, 9]
    assert cells.shape == (1, 2, 2, 9)
    expected = torch.zeros(2, 2, 9)
    expected[:, :, 0] = 8 * 200 / 64  # one column of 8 pixels per cell, magnitude 200, averaged over 64 pixels
    torch.testing.assert_close(cells[0], expected)


def test_signed_orientation_tells_the_direction_of_an_edge():
    dark_to_light = torch.arange(0, 256, 8, dtype=torch.uint8).view(1, 1, 1, 32).expand(1, 1, 32, 32).clone()
    light_to_dark = dark_to_light.flip(3)
    unsigned, signed = HOG(block_norm="none"), HOG(block_norm="none", signed=True, bins=8)
    for image in (dark_to_light, light_to_dark):
        assert unsigned.cells(image)[..., 0].sum() > 0 and unsigned.cells(image)[..., 1:].sum() == 0  # both 0 (mod 180)
    assert signed.cells(dark_to_light)[..., 1:].sum() == 0  # 0 degrees: bin 0 of 45-degree bins
    assert signed.cells(light_to_dark)[..., [0, 1, 2, 3, 5, 6, 7]].sum() == 0  # 180 degrees: bin 4


def test_hog_is_batched_and_independent_of_the_chunk():
    images = sample_images(3, 32)
    hog = HOG()
    torch.testing.assert_close(torch.cat([hog(images[:2]), hog(images[2:])]), hog(images))


def test_parameters_and_image_sizes_are_checked_with_one_line():
    assert config_error(["features=hog", "model=linear", "features.hog.bins=0"]).startswith(
        "features.hog.bins=0 is invalid"
    )
    assert "L2-Hys" in config_error(["features=hog", "model=linear", "features.hog.block_norm=L3"])
    with pytest.raises(UserError, match=r"needs images of at least 32x32 pixels, these are 28x28"):
        HOG(cell_size=16).size((1, 28, 28))


def test_glyphs_draw_a_line_along_the_edge():
    lines = stencils(bins=4, signed=False, size=9)  # bin middles: 22.5, 67.5, 112.5, 157.5 degrees
    assert lines.shape == (4, 9, 9) and lines.max() <= 1
    # A vertical edge has a horizontal gradient (0 degrees), so its line is vertical: the glyph of
    # a cell voting for bin 0 (22.5) is brighter along the middle column than along the middle row.
    assert lines[0, :, 4].sum() > 2 * lines[0, 4, :].sum()
    assert lines[1, 4, :].sum() > 2 * lines[1, :, 4].sum()  # 67.5 degrees: close to a horizontal line
    image = torch.zeros(1, 1, 16, 16, dtype=torch.uint8)
    image[..., 8:] = 200
    drawn = glyphs(HOG(), image)
    assert drawn.shape == (1, 1, 32, 32) and 0 <= drawn.min() and drawn.max() <= 1


@pytest.mark.parametrize("side,cell", [(32, 8), (28, 7), (24, 8), (30, 6), (17, 8)])
def test_auto_cell_size_is_the_largest_up_to_8_that_tiles_the_image(side, cell):
    assert HOG(cell_size="auto").for_shape((1, side, side)).cell_size == cell
    assert HOG(cell_size=5).for_shape((1, side, side)).cell_size == 5  # a number is kept as it is
