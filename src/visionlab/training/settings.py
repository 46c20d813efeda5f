"""conf/trainer/: how a partition is trained, one field per key (a new option: one YAML line, one field).

Built once by the run from its `_target_`; checks.py reads the declarations before anything loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Annotated

from visionlab.checks import Address, Either, Maybe, Number, OneOf, Switch, Text, Whole
from visionlab.training.early_stopping import EarlyStopping
from visionlab.training.epoch_budget import AUTO, EpochBudget
from visionlab.training.precision import CHOICES
from visionlab.training.signals import ON_HANGUP
from visionlab.tta import TTAMode


@dataclass
class TrainerSettings:
    epochs: Annotated[int | str, Either(Whole(1), OneOf(AUTO))]  # auto: epoch_budget's, for the train split's size
    batch_size: Annotated[int | str, Either(Whole(1), OneOf("all"))]  # all: full-batch gradient descent
    eval_batch_size: Annotated[int, Whole(1)]
    device: Annotated[str, Text()]  # which devices exist: training/device.py
    log_every_n_steps: Annotated[int, Whole(1)]
    grad_clip: Annotated[float | None, Maybe(Number(gt=0, example=1.0))]
    checkpoint_every_steps: Annotated[int | None, Maybe(Whole(1))]
    threads: Annotated[int | None, Maybe(Whole(1))]  # None: a share of the cores (training/threads.py)
    precision: Annotated[str, OneOf(*CHOICES)]
    channels_last: Annotated[bool, Switch()]
    compile: Annotated[bool, Switch()]
    on_hangup: Annotated[str, OneOf(*ON_HANGUP)]
    # Defaults only for keys added after checkpoints were first written, so an older last.pt still loads.
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    test_on: Annotated[str | None, Maybe(OneOf("best", "last"))] = None  # null: best with early stopping, else last
    # lookahead to the weights' average every N steps
    ema: Annotated[int | None, Maybe(Whole(1, unit="optimizer steps"))] = None
    tta: TTAMode = "none"  # test-time augmentation of the test pass (and vl-eval's)
    drop_last: Annotated[bool, Switch()] = False  # each epoch's last partial batch left out (training/loop.py)
    # processes that train the run together (training/distributed.py); auto: one per CUDA GPU, else 1
    devices: Annotated[int | str, Either(Whole(1, unit="processes"), OneOf("auto"))] = 1
    sync_batchnorm: Annotated[bool, Switch()] = False  # BatchNorm's statistics over every process's images (CUDA)
    # machines that train the run together, each on `devices` processes (launch.py); this one's number; where they meet
    nodes: Annotated[int, Whole(1, unit="nodes")] = 1
    node_rank: Annotated[int, Whole(0)] = 0
    rendezvous: Annotated[str | None, Maybe(Address())] = None
    epoch_budget: EpochBudget = field(default_factory=EpochBudget)  # what epochs=auto trains (training/epoch_budget.py)

    def tests_best(self) -> bool:
        return self.test_on == "best" or (self.test_on is None and self.early_stopping.enabled)

    def images_per_step(self, train_images: int) -> int:
        return train_images if self.batch_size == "all" else self.batch_size

    def for_steps_per_epoch(self, steps: int) -> TrainerSettings:
        """These settings with `epochs=auto` made a number for epochs of `steps` optimizer steps (a number of epochs
        given is kept as it is). Where the budget's epochs are enough steps, early stopping waits for its `min_steps`;
        where the train split is so small that more epochs make them up, every one is trained and the last weights
        take the test: a val split that small picks an epoch by a few images' noise."""
        if self.epochs != AUTO:
            return self
        budget = self.epoch_budget
        epochs = budget.epochs_for(steps)
        if epochs > budget.epochs:
            return dataclasses.replace(self, epochs=epochs, early_stopping=EarlyStopping())
        waits = max(self.early_stopping.min_steps, budget.min_steps)
        return dataclasses.replace(
            self, epochs=epochs, early_stopping=dataclasses.replace(self.early_stopping, min_steps=waits)
        )
