"""`split=kfold` runs, in process on tiny synthetic data: one model per fold, test untouched unless asked."""

from __future__ import annotations

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import TINY, compose_train, read_metrics
from visionlab.data.folds import stratified_folds
from visionlab.data.synthetic import Synthetic
from visionlab.errors import Diverged
from visionlab.evaluation import evaluate_checkpoint
from visionlab.experiment import run

QUIET = ["logging=none"]


def scalar_tags(log_dir) -> set[str]:
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return set(events.Tags()["scalars"])


def test_each_fold_trains_its_own_model_and_the_test_set_is_not_touched(tmp_path):
    metrics = run(compose_train([*TINY, *QUIET, "model=mlp", "split=kfold", "split.folds=3"]), tmp_path)

    per_fold = [metrics[f"cv/fold_{i}/val_acc"] for i in range(3)]
    assert metrics["cv/folds"] == 3 and "cv/fold_3/val_acc" not in metrics
    assert metrics["cv/val_acc_mean"] == pytest.approx(sum(per_fold) / 3)
    assert metrics["cv/val_acc_std"] == pytest.approx(torch.tensor(per_fold).std(correction=0).item())
    assert metrics["val/acc"] == metrics["cv/val_acc_mean"]  # the objective a sweeper sees
    assert metrics["val/loss"] == pytest.approx(sum(metrics[f"cv/fold_{i}/val_loss"] for i in range(3)) / 3)
    assert metrics["cv/val_acc_mean"] > 0.3, "tiny synthetic data is learnable well above chance"
    assert metrics["test/acc"] is None and metrics["test/loss"] is None
    assert metrics["status"] == "completed" and metrics["steps"] == 3 * 2 * 7  # 400 images in batches of 64, 2 epochs
    assert read_metrics(tmp_path) == pytest.approx(metrics)

    for i in range(3):
        tags = scalar_tags(tmp_path / f"fold_{i}")
        assert {"train/loss", "val/acc", "val/loss"} <= tags and not any(t.startswith("test/") for t in tags)
    root = scalar_tags(tmp_path)
    assert {"val/acc", "cv/val_acc_mean", "cv/val_acc_std"} <= root and not any(t.startswith("test/") for t in root)
    assert not (tmp_path / "final").exists()
    # every fold checkpoints, as a holdout does
    assert all((tmp_path / f"fold_{i}" / "last.pt").is_file() for i in range(3))
    assert (tmp_path / "last.pt").samefile(tmp_path / "fold_2" / "last.pt")  # the run's last.pt: where it was last


def test_final_test_retrains_on_all_training_images_and_tests_once(tmp_path):
    metrics = run(
        compose_train([*TINY, *QUIET, "model=linear", "split=kfold", "split.folds=2", "split.final_test=true"]),
        tmp_path,
    )
    assert metrics["test/acc"] > 0.2 and metrics["test/loss"] > 0, "ten shapes: chance is 0.1"
    rescored = evaluate_checkpoint(tmp_path / "final")  # the final model's checkpoint, its own partition's data
    assert (rescored["test/acc"], rescored["test/loss"]) == (
        metrics["test/acc"],
        pytest.approx(metrics["test/loss"], rel=1e-6),
    )
    assert evaluate_checkpoint(tmp_path)["test/acc"] == metrics["test/acc"], "the run's last.pt is the final model's"
    final = EventAccumulator(str(tmp_path / "final"))
    final.Reload()
    assert len(final.Scalars("test/acc")) == 1
    assert final.Scalars("train/acc")[-1].step == 2 * 10  # 600 images, batches of 64: 10 steps per epoch
    assert metrics["val/acc"] == metrics["cv/val_acc_mean"]  # val stays the folds' estimate


def test_with_early_stopping_the_final_model_trains_the_folds_median_best_epoch(tmp_path):
    """The final model's val/ is training images: nothing to stop on, so it trains as long as the folds found best."""
    overrides = [
        *TINY,
        *QUIET,
        "model=mlp",
        "recipe=none",
        "split=kfold",
        "split.folds=3",
        "split.final_test=true",
        "trainer.epochs=8",
        "trainer.early_stopping.patience=1",
        "optimizer.lr=0.3",
    ]
    metrics = run(compose_train(overrides), tmp_path)
    best_epochs = []
    for i in range(3):
        events = EventAccumulator(str(tmp_path / f"fold_{i}"))
        events.Reload()
        accuracies = [event.value for event in events.Scalars("val/acc")]
        best_epochs.append(accuracies.index(max(accuracies)) + 1)
    final = EventAccumulator(str(tmp_path / "final"))
    final.Reload()
    expected = sorted(best_epochs)[1]
    assert len(final.Scalars("val/acc")) == expected and final.Scalars("train/acc")[-1].step == expected * 10
    assert metrics["status"] == "completed" and metrics["test/acc"] is not None


def test_knn_folds_match_a_from_scratch_nearest_neighbour_per_fold(tmp_path):
    """Each fold's kNN knows only its own training part: the votes equal a plain 1-NN on that part."""
    metrics = run(
        compose_train([*TINY, *QUIET, "model=knn", "split=kfold", "split.folds=3", "dataset.train_size=300"]), tmp_path
    )
    raw = Synthetic(train_size=300, test_size=200).load()
    pixels, labels = raw.train.images.flatten(1).double(), raw.train.labels
    for i, (train, val) in enumerate(stratified_folds(labels, 3, True, seed=0)):
        nearest = torch.cdist(pixels[val], pixels[train]).argmin(1)
        expected = (labels[train][nearest] == labels[val]).double().mean().item()
        assert metrics[f"cv/fold_{i}/val_acc"] == pytest.approx(expected), i
    assert metrics["val/loss"] is None and metrics["test/acc"] is None


def test_knn_with_several_k_keeps_the_k_best_on_average_for_the_final_model(tmp_path):
    overrides = ["model=knn", "model.k=[1,3,5]", "split=kfold", "split.folds=3", "split.final_test=true"]
    metrics = run(compose_train([*TINY, *QUIET, *overrides]), tmp_path)
    by_k = {k: metrics[f"val/acc@{k}"] for k in (1, 3, 5)}
    assert metrics["best_k"] == max(by_k, key=lambda k: (by_k[k], -k))
    assert metrics["cv/val_acc_mean"] == pytest.approx(by_k[metrics["best_k"]])
    final = EventAccumulator(str(tmp_path / "final"))
    final.Reload()
    assert {"test/acc", f"val/acc@{metrics['best_k']}"} <= set(final.Tags()["scalars"])
    assert not {f"val/acc@{k}" for k in by_k if k != metrics["best_k"]} & set(final.Tags()["scalars"])


def test_a_diverged_fold_ends_the_run_as_diverged(tmp_path):
    overrides = ["model=mlp", "optimizer=sgd", "optimizer.lr=1e30", "split=kfold", "split.folds=2"]
    with pytest.raises(Diverged, match="training diverged"):
        run(compose_train([*TINY, *QUIET, *overrides]), tmp_path)
    metrics = read_metrics(tmp_path)
    assert metrics["status"] == "diverged" and metrics["val/acc"] is None and "cv/val_acc_mean" not in metrics
