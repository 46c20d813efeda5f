"""`params/<name>`, `grads/<name>` histograms and the scalar `grad_norm`, every N epochs (off by default: slow)."""

from __future__ import annotations

from typing import Annotated

import torch

from visionlab.reporting.pictures.picture import EVERY, Evaluation, Picture


class Histograms(Picture):
    """Every parameter and its gradient from the epoch's last batch, plus that gradient's total L2 norm."""

    def __init__(self, histograms_every_n_epochs: Annotated[int, EVERY] = 0):
        self.every = histograms_every_n_epochs

    def end_epoch(self, val: Evaluation) -> None:
        if not self.due(self.every, val.epoch):
            return
        grads = []
        for name, param in self.subject.model.named_parameters():
            self.reporter.histogram(f"params/{name}", param, val.step)
            if param.grad is not None:
                self.reporter.histogram(f"grads/{name}", param.grad, val.step)
                grads.append(param.grad.norm())
        if grads:
            self.reporter.scalars({"grad_norm": torch.stack(grads).norm().item()}, val.step)
