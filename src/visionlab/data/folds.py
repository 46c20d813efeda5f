"""How the training images are divided to choose hyperparameters: one holdout, or k stratified folds.

These are the `split` config group. The test images are never part of either: they stay for
one final look at the chosen model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

import torch

from visionlab.checks import Number, Switch, Whole
from visionlab.data.splits import holdout_indices
from visionlab.errors import UserError

log = logging.getLogger("visionlab")

IndexPair = tuple[torch.Tensor, torch.Tensor]  # (train indices, val indices) into the training images


@dataclass
class Partition:
    """One (train, val) division of the training images; a run trains each the same way.

    `folder`: where its logs and checkpoints go inside the run directory ("" is the run directory
    itself). `test`: its model takes the run's one look at the test split. `final`: k-fold's model
    on all the training images, with what the folds chose.
    """

    folder: str
    train: torch.Tensor
    val: torch.Tensor
    test: bool
    final: bool = False
    title: str = ""  # for the log: "fold 2 of 5", "final model"


@dataclass
class Holdout:
    """A seeded random `val_fraction` of the training images is val; the model trains on the rest."""

    val_fraction: Annotated[float, Number(gt=0, lt=1, example=0.1)] = 0.1

    def plan(self, labels: torch.Tensor, seed: int) -> list[Partition]:
        return [Partition("", *holdout_indices(len(labels), self.val_fraction, seed), test=True)]


@dataclass
class KFold:
    """k stratified folds: each is val once while a fresh model trains on the other k-1.

    `final_test`: afterwards, retrain on all the training images and evaluate the test set once.
    """

    folds: Annotated[int, Whole(2)] = 5
    shuffle: Annotated[bool, Switch()] = True
    final_test: Annotated[bool, Switch()] = False

    def index_pairs(self, labels: torch.Tensor, seed: int) -> list[IndexPair]:
        if self.folds > len(labels):
            raise UserError(
                f"split.folds={self.folds} is more than the {len(labels):,} training images: use from 2 to "
                f"{len(labels)} folds"
            )
        smallest = int(torch.bincount(labels).min())
        if smallest < self.folds:
            log.warning(
                "split.folds=%d: the rarest class has only %d training images, so some val folds lack it",
                self.folds,
                smallest,
            )
        return stratified_folds(labels, self.folds, self.shuffle, seed)

    def plan(self, labels: torch.Tensor, seed: int) -> list[Partition]:
        partitions = [
            Partition(f"fold_{i}", train, val, test=False, title=f"fold {i + 1} of {self.folds}")
            for i, (train, val) in enumerate(self.index_pairs(labels, seed))
        ]
        if self.final_test:
            everything = torch.arange(len(labels))
            partitions.append(Partition("final", everything, everything, test=True, final=True, title="final model"))
        return partitions


def stratified_folds(labels: torch.Tensor, folds: int, shuffle: bool, seed: int) -> list[IndexPair]:
    """(train, val) index pairs in which every image is val exactly once.

    The images are lined up class by class (shuffled by `seed` within each class, or in index
    order) and dealt to the folds in turn, so fold sizes, and each class's count in every fold,
    differ by at most one.
    """
    n = len(labels)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)) if shuffle else torch.arange(n)
    lined_up = order[torch.sort(labels[order], stable=True).indices]
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[lined_up] = torch.arange(n) % folds
    return [((fold_of != f).nonzero().squeeze(1), (fold_of == f).nonzero().squeeze(1)) for f in range(folds)]
