"""What only a CUDA GPU can check: the airbench recipe's training steps in bf16, and kNN's exact integer
search through cuBLAS's int8 product at the shapes it refuses unpadded. Marked `gpu`; bench/gpu.py runs
them (`pytest -m gpu`) on a GPU machine. Without CUDA they skip."""

from __future__ import annotations

import math

import pytest
import torch

from tests.conftest import read_metrics, run_cli
from tests.models.test_knn import pixel_brute_force
from visionlab.data import DeviceSplit
from visionlab.models.airbench import Airbench
from visionlab.models.knn import KNN
from visionlab.models.knn.int8_l2 import IntegerL2
from visionlab.models.knn.pruned_l1 import PrunedL1
from visionlab.training.lookahead import Lookahead
from visionlab.training.precision import Precision
from visionlab.tta import with_tta

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA GPU here (torch.cuda.is_available() is false): bench/gpu.py runs these on one",
    ),
]

CUDA = torch.device("cuda")
TINY_COLOUR = [
    "dataset=synthetic",
    "dataset.shape=[3,32,32]",
    "dataset.train_size=2200",
    "dataset.test_size=500",
    "trainer.device=cuda",
]


def test_auto_precision_is_bf16_on_a_gpu_with_bfloat16_units_ampere_or_newer():
    native = torch.cuda.get_device_capability(CUDA) >= (8, 0)
    assert Precision("auto", CUDA).name == ("bf16" if native else "32")


def test_the_cifar10_gpu_recipe_trains_in_bf16_on_cuda_through_the_cli(tmp_path):
    result = run_cli(["experiment=cifar10_gpu", *TINY_COLOUR, "trainer.epochs=2"], tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    # 2,156 images, whole batches of 1,024 only (trainer.drop_last): 2 steps an epoch
    assert metrics["status"] == "completed" and metrics["device"].startswith("cuda") and metrics["steps"] == 2 * 2
    assert math.isfinite(metrics["train/loss"]) and metrics["test/acc"] is not None
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["config"]["trainer"]["precision"] == "bf16" and state["model"]["features.0._extra_state"] == {
        "fitted": True
    }


def test_a_bf16_step_with_lookahead_and_flip_tta_on_cuda_keeps_float32_weights():
    torch.manual_seed(0)
    model = Airbench((3, 32, 32), 10).to(CUDA).to(memory_format=torch.channels_last)
    images, labels = torch.randn(64, 3, 32, 32, device=CUDA), torch.randint(0, 10, (64,), device=CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.85, nesterov=True)
    lookahead = Lookahead(model, total_steps=2, every=1)
    for step in (1, 2):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lookahead.after_step(step)
    lookahead.finish()
    assert all(p.dtype == torch.float32 for p in model.parameters()) and torch.isfinite(loss)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        scores = with_tta(model.eval(), "flip_translate")(images)
    assert scores.shape == (64, 10) and torch.isfinite(scores).all()


def small_pixels(n: int, features: int, seed: int) -> DeviceSplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 1, features), dtype=torch.uint8, generator=generator)
    images[n // 2 :] = images[: n // 2]  # duplicates: ties for the lower index to settle
    return DeviceSplit(
        images, torch.randint(0, 4, (n,), generator=generator), torch.full((1, 1, 1, 1), 0.02), torch.zeros(1, 1, 1, 1)
    )


@pytest.mark.parametrize("distance", ["l2", "l1"])
@pytest.mark.parametrize("n,features,chunk_size", [(203, 75, 5), (64, 3, 512), (1000, 784, 16), (999, 17, 300)])
def test_knn_on_cuda_searches_in_int8_at_any_shape_and_finds_the_brute_force_neighbours(
    distance, n, features, chunk_size
):
    """cuBLAS's int8 product takes more than 16 rows and lengths in multiples of 8: chunks of 5 and 16
    queries, 75, 3 and 17 features, 203 and 999 training images are all padded to it."""
    cpu = small_pixels(n, features, seed=n)
    on_gpu = DeviceSplit(cpu.images.to(CUDA), cpu.labels.to(CUDA), cpu.scale.to(CUDA), cpu.shift.to(CUDA))
    model = KNN((1, 1, features), 4, k=3, distance=distance, chunk_size=chunk_size)
    model.fit(on_gpu)
    assert model.train_features.dtype == torch.int8 and model.train_features.is_cuda
    assert type(model.search) is {"l2": IntegerL2, "l1": PrunedL1}[distance]  # int8 products, VNNI or not
    picked = torch.arange(0, n, 3)
    distances, indices = model.neighbours(on_gpu.batch(picked.to(CUDA))[0], 3)
    expected_distances, expected_indices = pixel_brute_force(cpu, picked, distance, 3)
    assert torch.equal(indices.cpu(), expected_indices)
    torch.testing.assert_close(distances.cpu(), expected_distances, rtol=1e-9, atol=1e-9)


def test_knn_on_cuda_votes_as_on_the_cpu():
    cpu = small_pixels(500, 64, seed=7)
    on_gpu = DeviceSplit(cpu.images.to(CUDA), cpu.labels.to(CUDA), cpu.scale.to(CUDA), cpu.shift.to(CUDA))
    queries = cpu.batch(torch.arange(0, 500, 2))[0]
    for distance in ("l2", "l1"):
        models = [KNN((1, 1, 64), 4, k=[1, 5], distance=distance) for _ in range(2)]
        models[0].fit(cpu)
        models[1].fit(on_gpu)
        for k, scores in models[0].scores_by_k(queries).items():
            assert torch.equal(models[1].scores_by_k(queries.to(CUDA))[k].cpu(), scores)
