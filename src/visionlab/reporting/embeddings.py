"""What the network learned, as points: test images' penultimate-layer features in TensorBoard's projector.

The features are the input of the model's last Linear layer (the one that turns them into class
scores), so any model with a hidden layer has them: a CNN's or a ResNet's pooled features, an
MLP's last hidden layer. A linear classifier has no layer before its scores, and a kNN no layer
at all: they get no embedding. A `Penultimate` recorder is handed to the test pass's `evaluate()`
as its watcher: a forward pre-hook on that layer keeps the chosen images' rows as the pass goes,
so the embedding costs no pass of its own (a second pass over the default job's 1,000 test images
would add 7% to its work: 4,500 training images forward and backward, about 3 forward passes
each, plus 1,500 to evaluate).

They are written as the Projector tab reads them, beside the TensorBoard events
(`<step>/<tag>/tensors.tsv`, `metadata.tsv` with each point's true and predicted class, `sprite.png`
with the thumbnails, and `projector_config.pbtxt` naming them; tensorboard's own `ProjectorConfig`
message), the files `SummaryWriter.add_embedding` writes, but not with it: it formats every number
with its own `str()` and builds the sprite in float64, a visible share of a short run; one `%` per
row and a uint8 sprite cost a tenth of that (BENCHMARKS.md, "Seeing inside the network").
At most `points` test images, evenly spaced through the split (a dataset stored class by class
still shows every class).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import EmbeddingInfo, ProjectorConfig
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from visionlab.data import DeviceSplit
from visionlab.models.layers import penultimate_layer  # the features=network default too
from visionlab.training import distributed

log = logging.getLogger("visionlab")

TAG = "test/penultimate"
THUMBNAIL_PX = 32  # larger images are shrunk to this side in the sprite: 2,000 of 224 px would make a 300 MB one


def spaced(n: int, points: int) -> torch.Tensor:
    """`min(n, points)` indices evenly spaced over range(n), first and last included."""
    return torch.linspace(0, n - 1, min(n, points)).round().long() if n else torch.empty(0, dtype=torch.long)


class Penultimate:
    """Keeps the penultimate features and predicted classes of `points` evenly spaced images of one evaluate() pass.

    Use it as evaluate()'s `watch` (beside others: training.loop.all_of): the hook sees each batch's
    features just before the last layer, then evaluate() calls it with the batch's (scores, labels).
    Rows stay on the device until `write`. Without a penultimate layer, or with `points` 0, it keeps
    nothing. On several processes it may watch one rank's part of the split (training.loop.sees_a_part):
    `start_at`, then `gather`.
    """

    def __init__(self, model: nn.Module, n: int, points: int):
        self.index = spaced(n, points)
        self.seen = 0
        self.features: list[torch.Tensor] = []
        self.predicted: list[torch.Tensor] = []
        layer = penultimate_layer(model) if points > 0 else None
        self.handle = layer.register_forward_pre_hook(self._keep) if layer is not None else None
        if points > 0 and layer is None:
            log.info(
                "embedding: %s has no layer before its class scores, so the projector stays empty", type(model).__name__
            )

    def _rows(self, batch: int) -> torch.Tensor:
        """Positions in the current batch of the chosen images (a CPU tensor: no wait on the device)."""
        chosen = self.index[(self.index >= self.seen) & (self.index < self.seen + batch)]
        return chosen - self.seen

    def _keep(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if len(self.features) > len(self.predicted):
            # test-time augmentation runs the model on more views of the batch: keep the first, the images as they are
            return
        x = inputs[0]
        self.features.append(x[self._rows(len(x)).to(x.device)].flatten(1).float())

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        if self.handle is not None:
            self.predicted.append(scores[self._rows(len(labels)).to(scores.device)].argmax(1))
        self.seen += len(labels)

    def start_at(self, first: int) -> None:
        """The split index of the first image this rank's part of the evaluation shows it."""
        self.seen = first

    def gather(self) -> None:
        """Every rank's rows, in rank order (the order of the split), into every rank's recorder (a collective); it
        has then seen the whole split, so a later forward pass (the saliency picture's) adds no row."""
        if self.handle is None:  # no layer to record on any rank: the same model everywhere
            return
        device = self.features[0].device
        mine = (torch.cat(self.features).cpu(), torch.cat(self.predicted).cpu(), self.seen)
        parts = distributed.each_rank(mine)
        self.features = [features.to(device) for features, _, _ in parts]
        self.predicted = [predicted.to(device) for _, predicted, _ in parts]
        self.seen = max(seen for _, _, seen in parts)

    def write(self, writer: SummaryWriter, split: DeviceSplit, classes: Sequence[str], step: int) -> int:
        """The recorded points into the projector, under TAG at `step`; returns how many (0: none)."""
        if self.handle is None:
            return 0
        self.handle.remove()
        self.handle = None
        features = torch.cat(self.features).cpu()
        predicted = torch.cat(self.predicted).cpu()
        if len(features) != len(self.index) or len(predicted) != len(self.index):
            raise RuntimeError(
                f"embedding: {len(features)} feature rows for {len(self.index)} chosen images: was the recorder "
                "evaluate()'s watch for one whole pass?"
            )
        index = self.index.to(split.labels.device)
        metadata = [f"{classes[t]}\t{classes[p]}" for t, p in zip(split.labels[index].tolist(), predicted.tolist())]
        write_projector(
            Path(writer.get_logdir()),
            f"{step:05d}/{TAG.replace('/', '_')}",
            f"{TAG}:{step:05d}",
            features,
            ["true\tpredicted", *metadata],
            thumbnails(split.images[index.to(split.images.device)]),
        )
        return len(index)


def write_projector(
    log_dir: Path, folder: str, name: str, features: torch.Tensor, metadata: list[str], tiles: torch.Tensor
) -> None:
    """One embedding's files under `log_dir/folder`, and its entry added to the log's projector_config.pbtxt."""
    (log_dir / folder).mkdir(parents=True, exist_ok=True)
    # float32's 7-8 digits, one format call per row instead of one str() per number
    row = "\t".join(["%.8g"] * features.shape[1])
    (log_dir / folder / "tensors.tsv").write_text("".join(row % tuple(values) + "\n" for values in features.tolist()))
    (log_dir / folder / "metadata.tsv").write_text("\n".join(metadata) + "\n")
    Image.fromarray(sprite(tiles).numpy()).save(log_dir / folder / "sprite.png", compress_level=1)
    config_file = log_dir / "projector_config.pbtxt"
    config = (
        text_format.Parse(config_file.read_text(), ProjectorConfig()) if config_file.exists() else ProjectorConfig()
    )
    entry = EmbeddingInfo(tensor_name=name, tensor_path=f"{folder}/tensors.tsv", metadata_path=f"{folder}/metadata.tsv")
    entry.sprite.image_path = f"{folder}/sprite.png"
    entry.sprite.single_image_dim.extend([tiles.shape[3], tiles.shape[2]])
    config.embeddings.append(entry)
    config_file.write_text(text_format.MessageToString(config))


def sprite(tiles: torch.Tensor) -> torch.Tensor:
    """uint8 `[N, C, H, W]` tiles in the square grid the projector cuts them from, row by row:
    `[H', W']` or `[H', W', 3]`."""
    n, channels, height, width = tiles.shape
    side = math.ceil(n**0.5)
    grid = torch.zeros(side * side, channels, height, width, dtype=torch.uint8)
    grid[:n] = tiles
    grid = (
        grid.view(side, side, channels, height, width)
        .permute(0, 3, 1, 4, 2)
        .reshape(side * height, side * width, channels)
    )
    return grid[..., 0] if channels == 1 else grid[..., :3]


def thumbnails(images: torch.Tensor) -> torch.Tensor:
    """uint8 `[N, C, H, W]` with no side over THUMBNAIL_PX (the projector shows them small)."""
    tiles = images.cpu()
    side = max(tiles.shape[2:])
    if side > THUMBNAIL_PX:
        size = [max(1, round(s * THUMBNAIL_PX / side)) for s in tiles.shape[2:]]
        tiles = F.interpolate(tiles.float(), size=size, mode="area").round().to(torch.uint8)
    return tiles
