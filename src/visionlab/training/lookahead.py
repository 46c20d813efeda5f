"""Lookahead with an exponential moving average of the weights (airbench's `LookaheadState`).

Every `every` optimizer steps the average moves toward the model's weights, keeping a share `decay` of
itself, and the model's weights are then set to the average: the run carries on from a smoothed
point instead of wherever the last noisy steps left it. The share kept grows with the run,
decay(step) = max_decay x (step / total_steps) ^ power, so early steps move freely and late ones are
averaged hard. At the end `finish` sets the model to the average one last time: what is evaluated is
the average. BatchNorm's running statistics are averaged with the weights; integer buffers (its
batch count) are left alone.
"""

from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from visionlab.checks import Number, Whole


class Lookahead:
    def __init__(
        self,
        model: nn.Module,
        total_steps: int,
        every: Annotated[int, Whole(1, unit="optimizer steps")] = 5,
        max_decay: Annotated[float, Number(ge=0, lt=1, example=0.774)] = 0.95**5,
        power: Annotated[float, Number(ge=0, example=3.0)] = 3.0,
    ):
        self.model = model
        self.total_steps = total_steps
        self.every = every
        self.max_decay = max_decay
        self.power = power
        self.average = {name: value.detach().clone() for name, value in self._floats().items()}

    def _floats(self) -> dict[str, torch.Tensor]:
        return {
            name: value
            for name, value in self.model.state_dict().items()
            if isinstance(value, torch.Tensor) and value.is_floating_point()
        }  # not extra state (the whitening's fitted flag)

    def decay(self, step: int) -> float:
        return self.max_decay * (min(step, self.total_steps) / self.total_steps) ** self.power

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Call after optimizer step number `step` (1 for the first): every `every` steps, average and jump."""
        if step % self.every == 0:
            self._pull(self.decay(step))

    @torch.no_grad()
    def finish(self) -> None:
        """The model's weights become the average (the steps since the last average are dropped, as in airbench)."""
        self._pull(1.0)

    def _pull(self, decay: float) -> None:
        for name, value in self._floats().items():
            average = self.average[name]
            average.lerp_(value, 1 - decay)
            value.copy_(average)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The average, for a checkpoint: a resumed run must pull toward the same point."""
        return dict(self.average)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, average in self.average.items():
            average.copy_(state[name])
