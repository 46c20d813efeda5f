"""The split group: holdout and stratified k-fold indices, and how fold results are summed up."""

from __future__ import annotations

import statistics

import pytest
import torch

from tests.conftest import compose_train, config_error
from visionlab.config import build
from visionlab.cross_validation import final_model_trainer, summarize_folds
from visionlab.data.folds import Holdout, KFold, stratified_folds
from visionlab.errors import UserError
from visionlab.training.learners import GradientLearner, MemorizingLearner
from visionlab.training.loop import FitResult

# 103 images in 4 unbalanced classes, so sizes do not divide evenly.
LABELS = torch.tensor([0] * 40 + [1] * 31 + [2] * 20 + [3] * 12)[
    torch.randperm(103, generator=torch.Generator().manual_seed(1))
]


@pytest.mark.parametrize("folds,shuffle", [(5, True), (3, False), (2, True)])
def test_folds_are_disjoint_cover_every_image_and_are_stratified(folds, shuffle):
    partitions = stratified_folds(LABELS, folds, shuffle, seed=0)
    assert len(partitions) == folds
    vals = [val.tolist() for _, val in partitions]
    assert sorted(i for val in vals for i in val) == list(range(103))  # every image is val exactly once
    for train, val in partitions:
        assert set(train.tolist()).isdisjoint(val.tolist())
        assert len(train) + len(val) == 103
    sizes = [len(val) for val in vals]
    assert max(sizes) - min(sizes) <= 1
    for label in range(4):
        counts = [int((LABELS[val] == label).sum()) for _, val in partitions]
        assert max(counts) - min(counts) <= 1, (label, counts)  # each class spread evenly
        assert sum(counts) == int((LABELS == label).sum())


def test_folds_follow_the_seed_and_shuffle():
    first = stratified_folds(LABELS, 5, True, seed=0)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(first, stratified_folds(LABELS, 5, True, seed=0)))
    assert not all(torch.equal(a, b) for (_, a), (_, b) in zip(first, stratified_folds(LABELS, 5, True, seed=1)))
    in_order = stratified_folds(torch.tensor([0, 0, 0, 1, 1, 1]), 3, False, seed=0)
    assert [val.tolist() for _, val in in_order] == [[0, 3], [1, 4], [2, 5]]  # no shuffle: dealt in index order


def test_kfold_partitions_checks_against_the_data():
    assert len(KFold(folds=4).index_pairs(LABELS, seed=0)) == 4
    with pytest.raises(UserError, match=r"split.folds=200 is more than the 103 training images"):
        KFold(folds=200).index_pairs(LABELS, seed=0)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["split=kfold", "split.folds=1"], "split.folds=1 is invalid: use a whole number of at least 2"),
        (["split=kfold", "split.folds=2.5"], "split.folds=2.5 is invalid"),
        (["split=kfold", "split.shuffle=yes"], "split.shuffle='yes' is invalid: use true or false"),
        (["split=kfold", "split.final_test=1"], "split.final_test=1 is invalid"),
        (["split.val_fraction=1.5"], "split.val_fraction=1.5 is invalid: use a number in (0, 1)"),
        (["split.val_fraction=true"], "split.val_fraction=true is invalid"),
    ],
)
def test_bad_split_settings_name_the_key(overrides, message):
    assert message in config_error(overrides)


def test_holdout_keeps_a_seeded_val_fraction():
    (part,) = Holdout(val_fraction=0.2).plan(LABELS, seed=3)
    train, val = part.train, part.val
    assert len(val) == 21 and len(train) == 82
    assert torch.equal(val, Holdout(val_fraction=0.2).plan(LABELS, seed=3)[0].val)


# a learner that chooses nothing on val: its folds are summed up as they are
GRADIENT = GradientLearner(
    loss_fn=None, penalty=None, optimizer=None, schedule=None, augment=None, seed=0, objective="val/acc"
)


def fold(val_acc, val_loss=None, train_acc=0.9, extra=None) -> FitResult:
    return FitResult(
        {"loss": None if val_loss is None else 0.1, "acc": train_acc},
        {"acc": val_acc, "loss": val_loss},
        2,
        10,
        extra or {},
    )


def test_summary_is_the_mean_and_population_std_over_folds():
    result = summarize_folds([fold(0.6, 1.2, 0.8), fold(0.7, 1.0, 0.9), fold(0.8, 0.8, 1.0)], GRADIENT)
    assert result.val["acc"] == pytest.approx(0.7) and result.val["loss"] == pytest.approx(1.0)
    assert result.extra["cv/val_acc_mean"] == pytest.approx(0.7)
    assert result.extra["cv/val_acc_std"] == pytest.approx(statistics.pstdev([0.6, 0.7, 0.8]))
    assert [result.extra[f"cv/fold_{i}/val_acc"] for i in range(3)] == [0.6, 0.7, 0.8]
    assert result.extra["cv/fold_2/val_loss"] == 0.8 and result.extra["cv/folds"] == 3
    assert result.train["acc"] == pytest.approx(0.9) and result.steps == 30 and result.epochs == 2


def test_knn_k_is_chosen_by_its_mean_over_folds_not_per_fold():
    # Fold 0 prefers k=1, fold 1 k=3; over both, k=3 is better on average (0.75 vs 0.7).
    folds = [
        fold(0.8, extra={"val/acc@1": 0.8, "val/acc@3": 0.7, "best_k": 1}),
        fold(0.8, extra={"val/acc@1": 0.6, "val/acc@3": 0.8, "best_k": 3}),
    ]
    result = summarize_folds(folds, MemorizingLearner(eval_batch_size=128))
    assert result.extra["best_k"] == 3
    assert result.extra["val/acc@1"] == pytest.approx(0.7) and result.extra["val/acc@3"] == pytest.approx(0.75)
    assert result.val["acc"] == pytest.approx(0.75), "each fold's own best k (mean 0.8) would flatter the estimate"
    assert [result.extra["cv/fold_0/val_acc"], result.extra["cv/fold_1/val_acc"]] == [0.7, 0.8]
    assert result.val["loss"] is None and "cv/fold_0/val_loss" not in result.extra  # a kNN has no loss


def test_the_final_model_trains_the_folds_median_best_epoch_without_early_stopping():
    stopping = build(compose_train(["trainer.epochs=10", "trainer.early_stopping.patience=1"]), "trainer")
    final = final_model_trainer(stopping, [fold(0.6, extra={"best_epoch": epoch}) for epoch in (2, 5, 3)])
    assert final.epochs == 3 and not final.early_stopping.enabled
    assert final_model_trainer(stopping, [fold(0.6), fold(0.7)]) is stopping, "a kNN's folds chose no epoch"
    plain = build(compose_train(["recipe=none", "trainer.epochs=4"]), "trainer")
    assert final_model_trainer(plain, [fold(0.6, extra={"best_epoch": 1})]) is plain, "no early stopping: as configured"
