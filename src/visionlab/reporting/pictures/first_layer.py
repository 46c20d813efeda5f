"""`first_layer/class_templates`, `first_layer/templates`, `first_layer/filters`: what the first layer learned."""

from __future__ import annotations

import math
from typing import Annotated

from torch import nn

from visionlab.reporting import visuals
from visionlab.reporting.pictures.picture import EVERY, Evaluation, Picture

UNITS_SHOWN = 64  # first-layer units of an MLP shown as templates


def first_layer(model: nn.Module) -> tuple[nn.Module, bool] | None:
    """The first Linear or Conv2d layer (in registration order), and whether it is the only one.

    The only layer of a linear classifier turns pixels into class scores, so its weight rows are
    class templates; the first of several is a bank of templates or filters the rest builds on.
    """
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return (layers[0], len(layers) == 1) if layers else None


class FirstLayer(Picture):
    """A linear classifier's class templates, an MLP's first units, a CNN's first conv filters, every N epochs."""

    shows_input = True
    called = "first-layer"

    def __init__(self, first_layer_every_n_epochs: Annotated[int, EVERY] = 1):
        self.every = first_layer_every_n_epochs

    def end_epoch(self, val: Evaluation) -> None:
        if not self.due(self.every, val.epoch):
            return
        found = first_layer(self.subject.model)
        if found is None:
            return
        layer, only = found
        weight, in_shape, step, after = layer.weight, self.subject.splits.in_shape, val.step, val.after
        if isinstance(layer, nn.Conv2d):
            tiles = visuals.as_tiles(weight, weight.shape[1:])
            # a row per filter when split by channel
            per_row = weight.shape[1] if len(tiles) > len(weight) else math.ceil(math.sqrt(len(tiles)))
            title = f"first conv layer: {len(weight)} filters of {weight.shape[2]}x{weight.shape[3]}{after}"
            self.reporter.image("first_layer/filters", visuals.picture(tiles, per_row, title=title), step)
        elif layer.in_features == math.prod(in_shape):
            if only:  # a linear classifier: one template per class
                tiles = visuals.as_tiles(weight, in_shape)
                image = visuals.picture(
                    tiles, len(tiles), title=f"class templates (rows of W){after}", col_labels=self.classes
                )
                self.reporter.image("first_layer/class_templates", image, step)
            else:
                tiles = visuals.as_tiles(weight[:UNITS_SHOWN], in_shape)
                title = f"first layer: {len(tiles)} of {len(weight)} units as templates{after}"
                self.reporter.image("first_layer/templates", visuals.picture(tiles, 8, title=title), step)
