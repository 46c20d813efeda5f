"""What each key of conf/trainer/ accepts; checks.py reads these declarations (the group has no `_target_`)."""

from __future__ import annotations

from typing import Annotated

from visionlab.checks import Either, Maybe, Number, OneOf, Switch, Text, Whole
from visionlab.training.precision import PRECISIONS
from visionlab.training.signals import ON_HANGUP


class TrainerSettings:
    epochs: Annotated[int, Whole(1)]
    batch_size: Annotated[int | str, Either(Whole(1), OneOf("all"))]  # all: full-batch gradient descent
    eval_batch_size: Annotated[int, Whole(1)]
    device: Annotated[str, Text()]  # which devices exist: training/device.py
    log_every_n_steps: Annotated[int, Whole(1)]
    grad_clip: Annotated[float | None, Maybe(Number(gt=0, example=1.0))]
    checkpoint_every_steps: Annotated[int | None, Maybe(Whole(1))]
    threads: Annotated[int | None, Maybe(Whole(1))]
    precision: Annotated[str, OneOf(*PRECISIONS)]
    channels_last: Annotated[bool, Switch()]
    compile: Annotated[bool, Switch()]
    on_hangup: Annotated[str, OneOf(*ON_HANGUP)]
