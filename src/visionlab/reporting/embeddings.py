"""What the network learned, as points: test images' penultimate-layer features in TensorBoard's projector.

The features are the input of the model's last Linear layer (the one that turns them into class
scores), taken with a forward pre-hook, so any model with a hidden layer has them: a CNN's or a
ResNet's pooled features, an MLP's last hidden layer. A linear classifier has no layer before its
scores, and a kNN no layer at all: they get no embedding.

`SummaryWriter.add_embedding` writes them under the run directory (`<step>/<tag>/tensors.tsv`,
`metadata.tsv` with each point's true and predicted class, `sprite.png` with the thumbnails,
and `projector_config.pbtxt` naming them), where the Projector tab shows PCA and t-SNE of them.
At most `points` test images, evenly spaced through the split (a dataset stored class by class
still shows every class), at the cost of one forward pass over them and writing the files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from visionlab.data import DeviceSplit

log = logging.getLogger("visionlab")

TAG = "test/penultimate"
THUMBNAIL_PX = 32  # larger images are shrunk to this side in the sprite: 2,000 of 224 px would make a 300 MB one


def penultimate_layer(model: nn.Module) -> nn.Linear | None:
    """The model's last Linear layer, if some layer with weights comes before it; else None."""
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    return layers[-1] if len(layers) > 1 and isinstance(layers[-1], nn.Linear) else None


def spaced(n: int, points: int) -> torch.Tensor:
    """`min(n, points)` indices evenly spaced over range(n), first and last included."""
    return torch.linspace(0, n - 1, min(n, points)).round().long() if n else torch.empty(0, dtype=torch.long)


def penultimate_features(model: nn.Module, layer: nn.Module, split: DeviceSplit, index: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(features `[n, d]`, predicted classes `[n]`) of the split's images at `index`, on the CPU, in eval mode."""
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_pre_hook(lambda module, inputs: captured.append(inputs[0].flatten(1).float().cpu()))
    was_training = model.training
    predicted = []
    try:
        model.eval()
        with torch.inference_mode():
            for part in index.to(split.labels.device).split(batch_size):
                predicted.append(model(split.batch(part)[0]).argmax(1).cpu())
    finally:
        model.train(was_training)
        handle.remove()
    return torch.cat(captured), torch.cat(predicted)


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[N, C, H, W]` as floats in [0, 1], no side over THUMBNAIL_PX (the projector shows them small)."""
    tiles = images.cpu().float() / 255
    side = max(tiles.shape[2:])
    if side > THUMBNAIL_PX:
        size = [max(1, round(s * THUMBNAIL_PX / side)) for s in tiles.shape[2:]]
        tiles = F.interpolate(tiles, size=size, mode="area")
    return tiles


def log_embedding(writer: SummaryWriter, model: nn.Module, split: DeviceSplit, classes: Sequence[str], step: int,
                  points: int, batch_size: int = 128) -> int:
    """The first-to-last evenly spaced `points` images of `split` into the projector; returns how many (0: none, and why is logged)."""
    layer = penultimate_layer(model)
    if layer is None or points <= 0 or not len(split):
        if points > 0 and layer is None:
            log.info("embedding: %s has no layer before its class scores, so the projector stays empty", type(model).__name__)
        return 0
    index = spaced(len(split), points)
    features, predicted = penultimate_features(model, layer, split, index, batch_size)
    true = split.labels[index.to(split.labels.device)].cpu()
    metadata = [[classes[t], classes[p]] for t, p in zip(true.tolist(), predicted.tolist())]
    writer.add_embedding(features, metadata=metadata, metadata_header=["true", "predicted"],
                         label_img=thumbnails(split.images[index.to(split.images.device)]), global_step=step, tag=TAG)
    return len(index)
