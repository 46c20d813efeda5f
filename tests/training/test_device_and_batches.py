"""Device choice and how an epoch is cut into batches."""

from __future__ import annotations

import pytest
import torch

from visionlab.errors import UserError
from visionlab.training.device import resolve_device
from visionlab.training.loop import steps_per_epoch, usable_size


def test_auto_picks_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "tpu"])
def test_unknown_device_names_are_rejected(name):
    with pytest.raises(UserError, match="use auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    "n,batch_size,usable,steps",
    [(100, 10, 100, 10), (101, 10, 100, 10), (102, 10, 102, 11), (5, 1, 5, 5), (100, 100, 100, 1), (100, 500, 100, 1)],
)
def test_an_epoch_drops_only_a_trailing_batch_of_one(n, batch_size, usable, steps):
    assert usable_size(n, batch_size) == usable
    assert steps_per_epoch(n, batch_size) == steps
