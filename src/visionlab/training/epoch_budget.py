"""`trainer.epochs=auto`, the recipes' default: an epoch budget that follows the train split's size.

A fixed number of epochs is a different amount of training on every dataset: MNIST's 54,000 training
images make 422 steps an epoch at batch 128, a student's folder of 216 photos makes 2. The budget is
up to `epochs` epochs, and at least `min_steps` optimizer steps: on a small train split it trains as
many epochs as make them up, and early stopping waits for them (`EarlyStopping.min_steps`), so a
noisy first epoch on a few hundred images cannot end the run. Made a number once the run knows its
train split (experiment/run.py); what it chose is in train.log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from visionlab.checks import Whole

AUTO = "auto"


@dataclass
class EpochBudget:
    epochs: Annotated[int, Whole(1, unit="epochs")] = 10  # on a train split of at least min_steps steps an epoch
    min_steps: Annotated[int, Whole(0, unit="optimizer steps")] = 0

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Up to `epochs` epochs, or as many as make `min_steps` steps when the epochs are short."""
        return max(self.epochs, -(-self.min_steps // max(steps_per_epoch, 1)))
