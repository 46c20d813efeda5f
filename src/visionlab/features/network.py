"""`features=network`: a trained network's activations as the features a vector model (kNN, linear, MLP) learns from.

The course's last step from pixels through hand-made features (HOG, colour, a bag of words): a network is a learned
feature transform, and the numbers one of its layers gives are features like any other. The network comes from a
visionlab run (`features.network.checkpoint`: its folder, whose checkpoint is the one `vl-eval` would score, or a
`.pt` file), is rebuilt from the config stored in its checkpoint once trust.py has checked that config, and runs in
eval mode without gradients, on the run's device, a batch at a time.

Its input is prepared as its own run prepared its images: the checkpoint records their shape, the per-channel mean and
std of its train part (`Checkpoint.inputs`) and its classes; a checkpoint written before it recorded them has them
computed from its own dataset, as vl-eval would. Images of this run that differ are made to fit, and the log says so
(docs/features.md, "Network features"): colour to grey with Pillow's weights (ITU-R 601-2 luma), grey to colour by
repeating the channel, another size by bilinear resizing (antialiased, as Pillow's `resize`).

The layer (`features.network.layer`) is a name from the network's `named_modules()`, whose output is flattened into
one vector per image; by default (null) the input of its last Linear layer, the penultimate features the projector
shows (models/layers.py). The checkpoint's SHA-256 and the layer are part of the features cache's key, so a retrained
network never reuses another one's features.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from torch import nn

from visionlab.checkpoint_format import Checkpoint, read_checkpoint, run_checkpoint
from visionlab.checks import Maybe, Text, Whole
from visionlab.data.splits import channel_stats
from visionlab.errors import UserError
from visionlab.models.layers import penultimate_layer
from visionlab.trust import Allowlist, check_stored, keep_writes_here

log = logging.getLogger("visionlab")

KEY = "features.network.checkpoint"
LISTED = 12  # layer names a refused layer's line lists
GREY = (19595, 38470, 7471)  # Pillow's convert("L"): (R * 19595 + G * 38470 + B * 7471 + 2**15) >> 16


class _Reached(Exception):
    """Raised by the hook once the layer has given its features: the rest of the network is not run."""


@dataclass
class NetworkFeatures:
    """`features.network`: the activations of a trained network at one layer.

    checkpoint: a visionlab run folder (its checkpoint that took the run's test, as vl-eval loads) or a `.pt` file.
    layer: a module name from the network's `named_modules()` (its output, flattened); null: the input of its last
        Linear layer, the penultimate features.
    batch_size: images per forward pass.
    sha256, normalization: set when the network is loaded, never in the config: the checkpoint's content and the
        normalization its input takes, so the features cache tells one network from another.
    """

    checkpoint: Annotated[str | None, Maybe(Text())] = None
    layer: Annotated[str | None, Maybe(Text())] = None
    batch_size: Annotated[int, Whole(1)] = 256
    sha256: str = field(default="", init=False)
    normalization: list[float] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if self.checkpoint is None:
            raise UserError(
                f"features=network needs {KEY}=RUN_DIR (a vl-train run folder) or a .pt checkpoint: the trained "
                "network whose activations become the features"
            )
        self.file, state, self.sha256 = load(self.checkpoint)
        inputs = checked_inputs(
            self.checkpoint, self.file, state.inputs or inputs_from_its_data(self.checkpoint, self.file, state)
        )
        self.in_shape = tuple(int(side) for side in inputs["shape"])
        mean = torch.tensor(inputs["mean"], dtype=torch.float32)
        std = torch.tensor(inputs["std"], dtype=torch.float32)
        self.normalization = [*inputs["mean"], *inputs["std"]]
        # as data/splits.py's make_splits normalizes: float(x) * scale + shift, the same float32 arithmetic
        self.scale = (1.0 / (255.0 * std)).view(1, -1, 1, 1)
        self.shift = (-mean / std).view(1, -1, 1, 1)
        self.model = build_network(self.checkpoint, self.file, state, self.in_shape, len(inputs["classes"]))
        self.module, self.takes_input = self._layer()
        self.width = self._activations(torch.zeros(1, *self.in_shape)).shape[1]

    def _layer(self) -> tuple[nn.Module, bool]:
        """The module to watch, and whether its input (the penultimate default) or its output is the features."""
        named = dict(self.model.named_modules())
        names = [name for name in named if name]
        if self.layer is None:
            last = penultimate_layer(self.model)
            if last is None:
                raise UserError(
                    f"features.network.layer=null takes the input of the network's last Linear layer, and the "
                    f"{type(self.model).__name__} of {self.file} has no layer before its class scores: name one with "
                    f"features.network.layer, one of {listed(names)}"
                )
            self.layer_name = next(name for name, module in named.items() if module is last)
            return last, True
        if self.layer not in names:
            raise UserError(
                f"features.network.layer={self.layer} is not a layer of the {type(self.model).__name__} of "
                f"{self.file}: use one of {listed(names)} (model.named_modules()), or null for the penultimate features"
            )
        self.layer_name = self.layer
        return named[self.layer], False

    # ---- the extractor protocol (features/base.py) -------------------------------------------------

    def size(self, shape: tuple[int, int, int]) -> int:
        """Numbers per image, whatever this run's image shape: the images are made to fit the network first."""
        return self.width

    def describe(self, shape: tuple[int, int, int]) -> str:
        where = (
            f"the input of {self.layer_name}, the penultimate features" if self.takes_input else f"{self.layer_name}"
        )
        fitted = self.fitting(shape)
        return (
            f"network activations ({type(self.model).__name__} of {self.file}, {where}"
            f"{'; ' + fitted if fitted else ''})"
        )

    def fitting(self, shape: tuple[int, int, int]) -> str:
        """What is done to images of `shape` to make them the network's input, in words ("" for nothing)."""
        c, h, w = shape
        want_c, want_h, want_w = self.in_shape
        done = []
        if c != want_c:
            if (c, want_c) not in ((3, 1), (1, 3)):
                raise UserError(
                    f"{KEY}={self.checkpoint}: its network takes images of {want_c} channel(s) and these have {c}: "
                    "use a network trained on 1 or 3 channels"
                )
            done.append("colour turned grey" if want_c == 1 else "grey repeated into 3 channels")
        if (h, w) != (want_h, want_w):
            done.append(f"resized from {h}x{w} to {want_h}x{want_w} (bilinear)")
        if not done:
            return ""
        return f"{' and '.join(done)}, as the network was trained on {want_c}x{want_h}x{want_w} images"

    @property
    def device(self) -> torch.device:
        """Where the network is: the CPU until it has computed features on the run's device."""
        return self.scale.device

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The activations `[N, width]` (float32, on the images' device) of uint8 images `[N, C, H, W]`."""
        self.model.to(images.device)
        self.scale, self.shift = self.scale.to(images.device), self.shift.to(images.device)
        scale, shift = self.scale, self.shift
        rows = []
        for start in range(0, len(images), self.batch_size):
            x = fitted(images[start : start + self.batch_size], self.in_shape)
            rows.append(self._activations(x.mul_(scale).add_(shift)))
        return torch.cat(rows) if rows else torch.empty(0, self.width, device=images.device)

    def _activations(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's numbers for a normalized float batch, flattened: the network runs up to that layer only."""
        found: list[torch.Tensor] = []

        def keep(value: Any) -> None:
            if not isinstance(value, torch.Tensor):
                raise UserError(
                    f"features.network.layer={self.layer_name} gives a {type(value).__name__}, not a tensor: name "
                    f"another layer, one of {listed([n for n, _ in self.model.named_modules() if n])}"
                )
            found.append(value.detach().flatten(1).float())
            raise _Reached

        if self.takes_input:
            handle = self.module.register_forward_pre_hook(lambda module, args: keep(args[0]))
        else:
            handle = self.module.register_forward_hook(lambda module, args, output: keep(output))
        try:
            with torch.no_grad():
                self.model(x)
        except _Reached:
            pass
        finally:
            handle.remove()
        if not found:
            raise UserError(
                f"features.network.layer={self.layer_name} is not on the path the {type(self.model).__name__}'s "
                f"forward takes: name another layer, one of {listed([n for n, _ in self.model.named_modules() if n])}"
            )
        return found[0]


def listed(names: list[str]) -> str:
    shown = ", ".join(names[:LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > LISTED else "")


def fitted(images: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """uint8 images `[N, C, H, W]` as float `[N, *shape]` with whole values in 0-255: channels converted and size
    resized as `dataset=folder` converts and resizes a file (Pillow's grey, bilinear with antialiasing)."""
    want_c, want_h, want_w = shape
    x = images
    if x.shape[1] == 3 and want_c == 1:
        r, g, b = (x[:, i : i + 1].int() for i in range(3))
        x = (r * GREY[0] + g * GREY[1] + b * GREY[2] + 2**15) >> 16
    elif x.shape[1] == 1 and want_c == 3:
        x = x.expand(-1, 3, -1, -1)
    x = x.float()
    if tuple(x.shape[2:]) != (want_h, want_w):
        x = F.interpolate(x, size=(want_h, want_w), mode="bilinear", antialias=True, align_corners=False)
        x = x.round_().clamp_(0, 255)  # stored as uint8 there
    return x.contiguous()


def load(checkpoint: str) -> tuple[Path, Checkpoint, str]:
    """The checkpoint `checkpoint` names (a run folder: the file vl-eval loads), checked by trust.py before anything
    in its config is imported, and its SHA-256."""
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise UserError(
            f"{KEY}={checkpoint} does not exist: give a vl-train run folder (outputs/DATE/TIME) or a checkpoint file "
            "(its best.pt or last.pt)"
        )
    try:
        file, _, _ = run_checkpoint(path)
        state, digest = read_checkpoint(file)
    except UserError as exc:
        hint = "" if "give " in str(exc) else ": give a vl-train run folder or its best.pt or last.pt"
        raise UserError(f"{KEY}={checkpoint} is not a network to take features from: {exc}{hint}") from None
    check_stored(state.config, file, Allowlist.for_command())
    model = state.config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("_target_"), str):
        raise UserError(f"{KEY}={checkpoint}: {file} is not a visionlab checkpoint: its config names no model")
    model_class = get_class(model["_target_"])  # allowed: conf/ names it
    if getattr(model_class, "memorizes", False):
        raise UserError(
            f"{KEY}={checkpoint} is a {model_class.__name__} run's, which memorizes its training images and has no "
            "network whose activations could be features: name a run of a network (model=cnn, mlp, resnet_small, ...)"
        )
    trained_on = [
        name
        for name, node in (state.config.get("features") or {}).items()
        if isinstance(node, dict) and "_target_" in node
    ]
    if trained_on:
        raise UserError(
            f"{KEY}={checkpoint}: its {model_class.__name__} was trained on features ({' + '.join(trained_on)}), not "
            "on images: name a network trained on pixels (features=none)"
        )
    return file, state, digest


def build_network(checkpoint: str, file: Path, state: Checkpoint, in_shape: tuple[int, ...], classes: int) -> nn.Module:
    """The checkpoint's model with its weights, in eval mode, on the CPU (the extraction moves it to the images)."""
    try:
        overrides = state.place.model_overrides  # what a k-fold run's folds chose for its final model
        model = instantiate(state.config["model"], in_shape=in_shape, num_classes=classes, **overrides)
        model.load_state_dict(state.model)
    except Exception as exc:  # a file from elsewhere that does not build what it names is bad input, not a bug
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"{KEY}={checkpoint}: {file} does not rebuild its model ({reason})") from None
    return model.eval().requires_grad_(False)


def checked_inputs(checkpoint: str, file: Path, inputs: Any) -> dict[str, Any]:
    """`inputs` as visionlab writes them (a file may come from anyone): a [C, H, W] shape, a mean and a positive std
    per channel, at least one class."""
    try:
        channels = inputs["shape"][0]
        fine = (
            len(inputs["shape"]) == 3
            and all(isinstance(side, int) and 1 <= side <= 2**14 for side in inputs["shape"])
            and len(inputs["mean"]) == len(inputs["std"]) == channels
            and all(isinstance(value, float) for value in [*inputs["mean"], *inputs["std"]])
            and min(inputs["std"]) > 0
            and len(inputs["classes"]) >= 1
        )
    except (KeyError, IndexError, TypeError):
        fine = False
    if not fine:
        raise UserError(f"{KEY}={checkpoint}: {file} does not record its inputs as visionlab writes them")
    return inputs


def inputs_from_its_data(checkpoint: str, file: Path, state: Checkpoint) -> dict[str, Any]:
    """For a checkpoint that records no inputs (written before they were): its run's data read again, as vl-eval
    would, and its partition's train part measured as that run measured it."""
    log.info("features: %s records no input statistics (an older checkpoint): reading its run's dataset for them", file)
    config = keep_writes_here(state.config)  # no download, no cache: a file never decides where this writes
    try:
        raw = instantiate(config["dataset"]).load()
        plan = instantiate(config["split"]).plan(raw.train.labels, config["seed"])
        train = raw.train.images[plan[state.place.partition].train]
    except UserError as exc:
        raise UserError(
            f"{KEY}={checkpoint}: {file} records no input statistics (written before checkpoints did), and its "
            f"run's dataset cannot be read here to measure them ({exc}): train the network again"
        ) from None
    mean, std = channel_stats(train)
    return {"shape": list(train.shape[1:]), "mean": mean.tolist(), "std": std.tolist(), "classes": raw.classes}
