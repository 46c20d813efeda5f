"""Where in a model its features are: the layer whose input is the penultimate features (the classifier's input).

Shared by the projector's embedding (reporting/embeddings.py) and `features=network` (features/network.py), so
that the vectors a run shows as points are the ones another run can learn from.
"""

from __future__ import annotations

from torch import nn


def penultimate_layer(model: nn.Module) -> nn.Linear | None:
    """The model's last Linear layer, if some layer with weights comes before it; else None."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[-1] if len(layers) > 1 and isinstance(layers[-1], nn.Linear) else None
