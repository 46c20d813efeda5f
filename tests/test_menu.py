"""The course menu: every loss, regularizer, optimizer, schedule and model trains on synthetic data.

Options are read from conf/, so a new YAML is covered without touching this file. "Trains" means
a finite training loss whose epoch mean goes down, as read back from the run's TensorBoard file;
a model without parameters (kNN) memorizes and predicts well above chance.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import CONF_DIR, TINY, compose_train
from visionlab.config import validate
from visionlab.data.augment import Augment
from visionlab.experiment import run
from visionlab.models.blocks import ACTIVATIONS

GROUPS = ("loss", "regularization", "optimizer", "scheduler", "model")
OPTIONS = [f"{group}={f.stem}" for group in GROUPS for f in sorted((CONF_DIR / group).glob("*.yaml"))]
# Not options of a group, but knobs of the same menu.
EXTRAS = [
    "dataset.augment.crop_padding=2 dataset.augment.flip=true dataset.augment.translate=0.1",
    "dataset.augment.crop_padding=2 dataset.augment.flip=alternate dataset.augment.crop_padding_mode=reflect",
    "trainer.grad_clip=0.5",
    "trainer.batch_size=all model=linear",
    "trainer.batch_size=1 model=linear dataset.train_size=120",
    "model=mlp model.batchnorm=true model.dropout=0.2",
    "model=cnn model.pool=avg model.batchnorm=false model.activation=tanh model.dropout=0.0",
    *(f"model=mlp model.activation={name}" for name in ACTIVATIONS),
]


# Pictures are another feature's business and cost more than these tiny runs themselves.
NO_PICTURES = ["logging=none"]


def train(overrides: list[str], run_dir: Path) -> tuple[dict, dict[str, list[float]]]:
    metrics = run(compose_train([*TINY, *NO_PICTURES, *overrides]), run_dir)
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return metrics, scalars


MEMORIZING = ["model=knn"]  # no trainable parameters: it stores the training images instead


@pytest.mark.parametrize("overrides", [o for o in OPTIONS + EXTRAS if o not in MEMORIZING])
def test_option_trains_with_a_finite_loss_that_goes_down(overrides, tmp_path):
    metrics, scalars = train(overrides.split(), tmp_path)
    assert metrics["steps"] > 0
    data_loss = scalars["train/data_loss"]  # one mean per epoch
    assert all(math.isfinite(v) for v in data_loss + [metrics["train/loss"], metrics["val/loss"]])
    assert data_loss[-1] < data_loss[0]
    assert metrics["train/loss"] == pytest.approx(metrics["train/data_loss"] + metrics["train/reg_loss"])
    assert "lr" in scalars and "train/reg_loss" in scalars


@pytest.mark.parametrize("overrides", MEMORIZING)
def test_a_model_without_parameters_memorizes_in_no_steps_and_predicts_above_chance(overrides, tmp_path):
    metrics, scalars = train(overrides.split(), tmp_path)
    assert metrics["steps"] == 0 and metrics["train/loss"] is None and "train/data_loss" not in scalars
    assert metrics["val/acc"] > 0.3 and metrics["test/acc"] > 0.3, "ten shapes: chance is 0.1"


def test_regularization_is_logged_apart_from_the_data_loss(tmp_path):
    _, scalars = train(["model=linear", "regularization=l2", "regularization.strength=0.01"], tmp_path)
    assert all(v > 0 for v in scalars["train/reg_loss"])
    assert scalars["train/loss"][-1] == pytest.approx(
        scalars["train/data_loss"][-1] + scalars["train/reg_loss"][-1], rel=1e-5
    )


def test_batch_size_all_is_one_step_per_epoch_and_1_is_one_per_image(tmp_path):
    assert train(["model=linear", "trainer.batch_size=all"], tmp_path / "all")[0]["steps"] == 2
    one, _ = train(["model=linear", "trainer.batch_size=1", "dataset.train_size=50"], tmp_path / "one")
    assert one["steps"] == 2 * 45  # 50 images, 10% held out for val, two epochs


def test_augmentation_touches_training_batches_only(tmp_path, monkeypatch):
    seen = []
    original = Augment.__call__
    monkeypatch.setattr(
        Augment, "__call__", lambda self, images, *at: seen.append(len(images)) or original(self, images, *at)
    )
    metrics, _ = train(["model=linear", "dataset.augment.flip=true"], tmp_path)
    assert len(seen) == metrics["steps"]  # once per optimizer step: never on val or test batches


@pytest.mark.parametrize("drop_last,steps_per_epoch,images_per_epoch", [(False, 9, 540), (True, 8, 512)])
def test_drop_last_leaves_out_each_epochs_partial_batch(
    drop_last, steps_per_epoch, images_per_epoch, tmp_path, monkeypatch
):
    seen = []
    original = Augment.__call__
    monkeypatch.setattr(
        Augment, "__call__", lambda self, images, *at: seen.append(len(images)) or original(self, images, *at)
    )
    metrics, _ = train(["model=linear", "dataset.augment.flip=true", f"trainer.drop_last={drop_last}"], tmp_path)
    assert metrics["steps"] == 2 * steps_per_epoch  # 600 images, 60 held out for val, batches of 64, two epochs
    assert sum(seen) == 2 * images_per_epoch and set(seen[:steps_per_epoch]) <= {64, 540 % 64}


def test_grad_clip_bounds_the_gradient_norm_at_every_step(tmp_path, monkeypatch):
    norms = []
    original = torch.nn.utils.clip_grad_norm_

    def clip(params, max_norm, *args, **kwargs):
        params = list(params)
        total = original(params, max_norm, *args, **kwargs)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return total

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", clip)
    metrics, _ = train(["model=linear", "optimizer=sgd", "optimizer.lr=0.5", "trainer.grad_clip=0.1"], tmp_path)
    assert len(norms) == metrics["steps"] and max(norms) <= 0.1 + 1e-5


@pytest.mark.parametrize("name", sorted(f.stem for f in (CONF_DIR / "experiment").glob("*.yaml")))
def test_experiment_recipe_composes_validates_and_trains(name, tmp_path):
    """A recipe is a set of overrides: valid as written, and trained here on synthetic data (no download)."""
    validate(compose_train([f"experiment={name}"]))
    # float32: a GPU recipe's bf16 (cifar10_gpu) is 13x slower on a CPU without AVX-512 BF16
    # (tests/gpu/ runs it on CUDA)
    metrics, _ = train(
        [f"experiment={name}", "dataset=synthetic", "trainer.epochs=1", "trainer.precision=32"], tmp_path
    )
    assert math.isfinite(metrics["train/loss"])
