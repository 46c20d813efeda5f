"""Batch augmentation: each image gets its own random crop/flip/shift, and off means untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from tests.conftest import compose_train, config_error
from visionlab.data.augment import Augment, alternate_flips, random_crop, random_flip
from visionlab.errors import SettingRejected


def batch(n: int = 64, c: int = 3, size: int = 8) -> torch.Tensor:
    """Images whose every pixel value is distinct and non-zero, so a shift is recognisable."""
    return torch.arange(1, n * c * size * size + 1, dtype=torch.float32).view(n, c, size, size)


def window_offsets(out: torch.Tensor, padded: torch.Tensor, p: int) -> list[tuple[int, int]]:
    """Each output image's offset (dy, dx) as the one window of its padded self it equals."""
    h, w = out.shape[2:]
    offsets = []
    for i in range(len(out)):
        matches = [
            (dy, dx)
            for dy in range(2 * p + 1)
            for dx in range(2 * p + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert len(matches) == 1, f"image {i} is not a crop of its padded self"
        offsets.append(matches[0])
    return offsets


def test_everything_off_returns_the_batch_itself():
    images = batch()
    assert Augment()(images) is images


def test_random_crop_is_a_zero_filled_shift_of_at_most_padding_pixels_per_image():
    torch.manual_seed(0)
    images, p = batch(), 2
    out = Augment(crop_padding=p)(images)
    assert out.shape == images.shape
    shifts = window_offsets(out, F.pad(images, (p, p, p, p)), p)
    assert len(set(shifts)) > 5  # offsets are drawn per image, not once per batch


def test_flip_mirrors_about_half_the_images_left_right():
    torch.manual_seed(0)
    images = batch(n=200)
    out = Augment(flip=True)(images)
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, images)]
    kept = [torch.equal(o, i) for o, i in zip(out, images)]
    assert all(f != k for f, k in zip(flipped, kept))
    assert 60 < sum(flipped) < 140


def test_crop_and_flip_in_one_gather_equal_a_crop_then_a_flip():
    images = batch(n=100)
    torch.manual_seed(3)
    expected = random_flip(random_crop(images, 4))
    torch.manual_seed(3)
    assert torch.equal(Augment(crop_padding=4, flip=True)(images), expected)


def test_translate_shifts_content_within_the_fraction():
    torch.manual_seed(0)
    images = torch.zeros(32, 1, 20, 20)
    images[:, :, 10, 10] = 1.0  # one bright pixel in the middle
    out = Augment(translate=0.1)(images)
    assert out.shape == images.shape
    ys, xs = torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij")
    mass = out[:, 0].sum((1, 2))
    cy, cx = (out[:, 0] * ys).sum((1, 2)) / mass, (out[:, 0] * xs).sum((1, 2)) / mass
    assert ((cy - 10).abs() <= 2.01).all() and ((cx - 10).abs() <= 2.01).all()  # at most 10% of 20 pixels
    assert (cx - 10).abs().max() > 0.5  # and it does move


@pytest.mark.parametrize("field,value", [("crop_padding", -1), ("flip", "yes"), ("translate", 1.0)])
def test_bad_values_are_user_errors(field, value):
    assert config_error([f"dataset.augment.{field}={value}"]).startswith(f"dataset.augment.{field}=")


def test_on_for_cifar10_off_for_mnist_and_synthetic():
    on = instantiate(compose_train(["dataset=cifar10"]).dataset.augment)
    assert on.crop_padding == 4 and on.flip
    for name in ("mnist", "synthetic"):
        off = instantiate(compose_train([f"dataset={name}"]).dataset.augment)
        assert (off.crop_padding, off.flip, off.translate) == (0, False, 0.0)


def test_alternate_flips_mirror_a_random_half_then_each_image_the_other_way_every_epoch():
    images, index = batch(n=200), torch.arange(1000, 1200)
    augment = Augment(flip="alternate").with_seed(7)
    mirrored = []
    for epoch in range(1, 5):
        out = augment(images, index, epoch)
        flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, images)])
        assert all(torch.equal(o, i.flip(2)) or torch.equal(o, i) for o, i in zip(out, images))
        mirrored.append(flipped)
    assert 60 < mirrored[0].sum() < 140  # a random half at first
    assert torch.equal(mirrored[1], ~mirrored[0]) and torch.equal(mirrored[2], mirrored[0])
    assert torch.equal(mirrored[3], ~mirrored[0])
    # the pattern depends on the seed and each image's index alone: not on the batch it comes in, nor on torch's RNG
    torch.manual_seed(123)
    alone = augment(images[50:60], index[50:60], 3)
    assert torch.equal(alone, augment(images, index, 3)[50:60])
    other = Augment(flip="alternate").with_seed(8)(images, index, 1)
    assert not torch.equal(other, augment(images, index, 1))


def test_alternate_flips_with_a_crop_mirror_the_same_images_as_without():
    images, index, p = batch(n=100), torch.arange(100), 2
    h, w = images.shape[2:]
    padded = F.pad(images, (p,) * 4)
    for epoch in (1, 2):
        out = Augment(crop_padding=p, flip="alternate").with_seed(0)(images, index, epoch)
        mirrored = alternate_flips(index, epoch, seed=0)
        for i in range(len(images)):
            windows = [padded[i, :, y : y + h, x : x + w] for y in range(2 * p + 1) for x in range(2 * p + 1)]
            assert any(torch.equal(out[i], win.flip(2) if mirrored[i] else win) for win in windows)


def test_flip_true_is_random_flips():
    images = batch(n=50)
    torch.manual_seed(1)
    expected = Augment(flip="random")(images)
    torch.manual_seed(1)
    assert torch.equal(Augment(flip=True)(images), expected)


def test_reflect_padding_crops_windows_of_the_reflected_image():
    torch.manual_seed(0)
    images, p = batch(), 3
    out = Augment(crop_padding=p, crop_padding_mode="reflect")(images)
    shifts = window_offsets(out, F.pad(images, (p,) * 4, mode="reflect"), p)
    assert len(set(shifts)) > 5
    assert (out != 0).all()  # no zero-filled border anywhere


def test_reflect_padding_wider_than_the_image_is_refused_in_one_line():
    with pytest.raises(SettingRejected, match="crop_padding=8 with crop_padding_mode=reflect .* 8x8 image"):
        Augment(crop_padding=8, crop_padding_mode="reflect")(batch())


@pytest.mark.parametrize("field,value", [("flip", "sometimes"), ("crop_padding_mode", "wrap")])
def test_bad_flip_and_padding_mode_name_the_choices(field, value):
    message = config_error([f"dataset.augment.{field}={value}"])
    assert message.startswith(f"dataset.augment.{field}='{value}' is ")
    assert ("alternate" if field == "flip" else "reflect") in message
