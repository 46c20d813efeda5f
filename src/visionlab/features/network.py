"""`features=network`: a trained network's activations as the features a vector model (kNN, linear, MLP) learns from.

The course's last step from pixels through hand-made features (HOG, colour, a bag of words): a network is a learned
feature transform, and the numbers one of its layers gives are features like any other. The network comes from a
visionlab run (`features.network.checkpoint`: its folder, whose checkpoint is the one `vl-eval` would score, or a
`.pt` file), rebuilt from the config stored in its checkpoint once trust.py has checked that config and switched off
what it would write (a model=torchvision run's config reads no hub file: its checkpoint holds every weight); or it is
one of torchvision's, pretrained (`features.network.torchvision`, its weights named by `features.network.weights` as
model=torchvision names them, read by the same code: models/torchvision.py). It runs in eval mode without gradients,
on the run's device, a batch at a time.

Its input is prepared as its own run prepared its images: the checkpoint records their shape, the per-channel mean and
std of its train part (`Checkpoint.inputs`) and its classes; a checkpoint written before it recorded them has them
computed from its own dataset, as vl-eval would. Images of this run that differ are made to fit, and the log says so
(docs/features.md, "Network features"): colour to grey with Pillow's weights (ITU-R 601-2 luma), grey to colour by
repeating the channel, another size by bilinear resizing (antialiased, as Pillow's `resize`).

A torchvision network's input is prepared as its weights expect: pixels in [0, 1] through model=torchvision's input
adapter (grey repeated to three channels, the weights' normalization, a bilinear resize to the size the weights were
evaluated at, or `features.network.input_size`). Its weights are not part of a run trained on its features, so a
config read back (vl-eval, vl-predict) reads them from torch's hub cache and never downloads (`fetch`'s off value is
cache, trust.py): a missing file is one line saying where to put it, never features from random weights.

The layer (`features.network.layer`) is a name from the network's `named_modules()`, whose output is flattened into
one vector per image; by default (null) the input of its last Linear layer, the penultimate features the projector
shows (models/layers.py), a torchvision network's pooled features. The features cache's key is the network's content
(the checkpoint's SHA-256, or the weights file's), the layer, the input size and the normalization, so a retrained
network never reuses another one's features, and the same one under another name reads them.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from hydra.utils import get_class, instantiate
from torch import nn
from torchvision import models

from visionlab.checkpoint_format import Checkpoint, read_checkpoint, run_checkpoint
from visionlab.checks import Each, Either, Maybe, OneOf, Text, Whole, WritesOutside, shown
from visionlab.data.splits import channel_stats
from visionlab.errors import SettingRejected, UserError
from visionlab.models.layers import penultimate_layer
from visionlab.models.torchvision import (
    Builder,
    InputAdapter,
    build,
    cached,
    classifier,
    conversion,
    input_side,
    read_weights,
    replace_head,
    weights_of,
)
from visionlab.trust import Allowlist, check_stored, keep_writes_here

log = logging.getLogger("visionlab")

NODE = "features.network"
KEY = f"{NODE}.checkpoint"
FETCHES = ("download", "cache")  # no `none`: these weights are in no checkpoint, and random ones would be wrong
SIZE = Either(OneOf("auto"), Each(Whole(1, unit="pixels"), length=2, example="[224, 224]"))  # no null: no size yet
RANDOM_SEED = 0  # weights=null: the same untrained network every time, so vl-eval computes the features again
LISTED = 12  # layer names a refused layer's line lists
GREY = (19595, 38470, 7471)  # Pillow's convert("L"): (R * 19595 + G * 38470 + B * 7471 + 2**15) >> 16


class _Reached(Exception):
    """Raised by the hook once the layer has given its features: the rest of the network is not run."""


@dataclass
class NetworkFeatures:
    """`features.network`: the activations of a trained network at one layer.

    checkpoint: a visionlab run folder (its checkpoint that took the run's test, as vl-eval loads) or a `.pt` file.
    torchvision: instead, one of torchvision's classification networks (resnet18, ...), as model.name takes it.
    weights: its weights, as model.weights takes them: one of the builder's (DEFAULT, IMAGENET1K_V1, ...) from
        torch's hub cache, the path of a state dict, or null (an untrained network, the same each time).
    fetch: download (a hub file missing from the cache is downloaded into it) or cache (never downloads; what a
        config read back from a checkpoint has, since these weights are not in it).
    input_size: [h, w] the torchvision network is given; auto: the size its weights were evaluated at (224 for most).
    layer: a module name from the network's `named_modules()` (its output, flattened); null: the input of its last
        Linear layer, the penultimate features.
    batch_size: images per forward pass.
    sha256, normalization: set when the network is loaded, never in the config: the content of the checkpoint (or of
        the torchvision weights' file) and the normalization its input takes, so the features cache tells one network
        from another.
    """

    checkpoint: Annotated[str | None, Maybe(Text())] = None
    torchvision: Annotated[str | None, Builder(null_ok=True)] = None
    weights: Annotated[str | None, Maybe(Text())] = None
    fetch: Annotated[str, OneOf(*FETCHES), WritesOutside(off="cache")] = "download"
    input_size: Annotated[Any, SIZE] = "auto"
    layer: Annotated[str | None, Maybe(Text())] = None
    batch_size: Annotated[int, Whole(1)] = 256
    sha256: str = field(default="", init=False)
    normalization: list[float] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        if (self.checkpoint is None) == (self.torchvision is None):
            raise UserError(
                f"features=network needs {KEY}=RUN_DIR (a vl-train run folder, or its .pt checkpoint) for a network "
                f"you trained, or {NODE}.torchvision=NAME (resnet18, ...) with {NODE}.weights=DEFAULT for one of "
                f"torchvision's, pretrained: "
                + ("not both" if self.checkpoint is not None else "the network whose activations become the features")
            )
        if not isinstance(self.input_size, str):
            self.input_size = [int(side) for side in self.input_size]
        self.adapter: InputAdapter | None = None
        if self.torchvision is not None:
            self._torchvision()
        else:
            self._checkpoint()
        self.module, self.takes_input = self._layer()
        self.width = self._activations(torch.zeros(1, *self.in_shape)).shape[1]

    def _checkpoint(self) -> None:
        """The network of a visionlab checkpoint, its images prepared as its run prepared them."""
        for name, value, default in (("weights", self.weights, None), ("input_size", self.input_size, "auto")):
            if value != default:
                raise UserError(
                    f"{NODE}.{name}={shown(value)} is for {NODE}.torchvision: the network of {KEY}={self.checkpoint} "
                    f"has its own weights and input; drop {NODE}.{name}"
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
        self.source = f"{type(self.model).__name__} of {self.file}"
        self.shaped = f"the network was trained on {'x'.join(map(str, self.in_shape))} images"

    def _torchvision(self) -> None:
        """One of torchvision's networks with its weights (models/torchvision.py finds, fetches and reads them), its
        head kept: its layers are named as torchvision names them (layer4, avgpool, fc)."""
        try:
            self.model, self.adapter, self.file, self.normalization = pretrained(
                self.torchvision, self.weights, self.fetch, self.input_size
            )
        except SettingRejected as exc:  # its words name the key already: one line as it is
            raise UserError(str(exc)) from None
        self.in_shape = (3, *self.adapter.size)
        self.scale, self.shift = torch.full((1, 1, 1, 1), 1 / 255), torch.zeros(1, 1, 1, 1)  # to [0, 1]: the adapter's
        self.sha256 = file_digest(self.file) if self.file is not None else tensors_digest(self.model.state_dict())
        if self.weights is None:
            self.source = f"torchvision's {self.torchvision}, untrained"
            log.warning(
                "features: %s.weights=null: the features come from an untrained %s (random weights, the same each "
                "time); %s.weights=DEFAULT gives its pretrained ones",
                NODE,
                self.torchvision,
                NODE,
            )
        else:
            self.source = f"torchvision's {self.torchvision}, weights {self.weights} from {self.file}"
        said = f"{NODE}.input_size={shown(self.input_size)}" if self.input_size != "auto" else "its weights' size"
        self.shaped = f"{self.torchvision} is given {'x'.join(map(str, self.in_shape))} images ({said})"

    def _layer(self) -> tuple[nn.Module, bool]:
        """The module to watch, and whether its input (the penultimate default) or its output is the features."""
        named = dict(self.model.named_modules())
        names = [name for name in named if name]
        if self.layer is None:
            last = penultimate_layer(self.model)
            if last is None:
                raise UserError(
                    f"features.network.layer=null takes the input of the network's last Linear layer, and the "
                    f"{self.source} has no layer before its class scores: name one with features.network.layer, "
                    f"one of {listed(names)}"
                )
            self.layer_name = next(name for name, module in named.items() if module is last)
            return last, True
        if self.layer not in names:
            raise UserError(
                f"features.network.layer={self.layer} is not a layer of the {self.source}: use one of "
                f"{listed(names)} (model.named_modules()), or null for the penultimate features"
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
        return f"network activations ({self.source}, {where}{'; ' + fitted if fitted else ''})"

    def fitting(self, shape: tuple[int, int, int]) -> str:
        """What is done to images of `shape` to make them the network's input, in words ("" for nothing)."""
        c, h, w = shape
        want_c, want_h, want_w = self.in_shape
        done = []
        if c != want_c:
            if (c, want_c) not in ((3, 1), (1, 3)):
                named = f"{KEY}={self.checkpoint}" if self.adapter is None else f"{NODE}.torchvision={self.torchvision}"
                raise UserError(
                    f"{named}: its network takes images of {want_c} channel(s) and these have {c}: use images of 1 "
                    "or 3 channels (dataset.channels=3 for a folder)"
                )
            done.append("colour turned grey" if want_c == 1 else "grey repeated into 3 channels")
        if (h, w) != (want_h, want_w):
            done.append(f"resized from {h}x{w} to {want_h}x{want_w} (bilinear)")
        if not done:
            return ""
        return f"{' and '.join(done)}, as {self.shaped}"

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
            batch = images[start : start + self.batch_size]
            if self.adapter is None:
                rows.append(self._activations(fitted(batch, self.in_shape).mul_(scale).add_(shift)))
            else:  # pixels in [0, 1], which the adapter takes to 3 channels, the weights' normalization and size
                self.adapter.to(images.device)
                rows.append(self._activations(self.adapter(batch.float().mul_(scale).add_(shift))))
        return torch.cat(rows) if rows else torch.empty(0, self.width, device=images.device)

    def cache_key(self) -> dict[str, Any]:
        """What the features depend on besides the images (features/base.py's cache key): the network's content,
        not its file's name, the layer, and the input it is given."""
        return {
            "network": "checkpoint" if self.adapter is None else f"torchvision {self.torchvision}",
            "sha256": self.sha256,
            "layer": [self.layer_name, "input" if self.takes_input else "output"],
            "shape": list(self.in_shape),
            "normalization": self.normalization,
        }

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
                f"features.network.layer={self.layer_name} is not on the path the forward pass of the {self.source} "
                f"takes: name another layer, one of {listed([n for n, _ in self.model.named_modules() if n])}"
            )
        return found[0]


def listed(names: list[str]) -> str:
    text = ", ".join(names[:LISTED])
    return text + (f", ... ({len(names)} in all)" if len(names) > LISTED else "")


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
    """The checkpoint's model with its weights, in eval mode, on the CPU (the extraction moves it to the images).

    Built from its config as vl-eval builds it: what would write outside (model=torchvision's `fetch`) off, so nothing
    is read or downloaded for weights the checkpoint holds; model=torchvision's input adapter (its conversion to the
    pretrained weights' normalization) is a pair of buffers the checkpoint restores."""
    config = keep_writes_here(state.config)  # a file never decides where this writes
    try:
        overrides = state.place.model_overrides  # what a k-fold run's folds chose for its final model
        model = instantiate(config["model"], in_shape=in_shape, num_classes=classes, **overrides)
        model.load_state_dict(state.model)
    except Exception as exc:  # a file from elsewhere that does not build what it names is bad input, not a bug
        reason = " ".join(str(exc).split())[:300] or type(exc).__name__
        raise UserError(f"{KEY}={checkpoint}: {file} does not rebuild its model ({reason})") from None
    return model.eval().requires_grad_(False)


def pretrained(
    name: str, weights: str | None, fetch: str, input_size: Any
) -> tuple[nn.Module, InputAdapter, Path | None, list[float]]:
    """torchvision's `name` with `weights` (model=torchvision's rules and code: the hub cache, a file, or none), head
    and all, in eval mode; the adapter that takes pixels in [0, 1] to its input; the file its weights came from; the
    normalization the adapter applies (the weights' mean and std; without weights, the DEFAULT weights')."""
    key = NODE
    Builder().check(f"{key}.torchvision", name)
    family = models.get_model_weights(name)
    chosen, file = weights_of(name, weights, fetch, key)
    recipe = chosen if chosen is not None else (family.DEFAULT if weights is not None else None)
    default = family.DEFAULT.transforms().crop_size  # auto without weights: the size the DEFAULT weights take
    size = input_side(name, recipe, input_size, (default[0], default[-1]), key)
    if chosen is not None:
        file = cached(chosen, weights, name, fetch, key)
    scale, shift = conversion(recipe or family.DEFAULT, True, (torch.zeros(3), torch.ones(3)))  # from [0, 1] pixels
    transforms = (recipe or family.DEFAULT).transforms()
    adapter = InputAdapter(3, size, scale, shift)
    classes = len(family.DEFAULT.meta["categories"])
    with torch.random.fork_rng(devices=[]):  # the run's own random numbers are left as they were
        torch.manual_seed(RANDOM_SEED)  # weights=null: the same untrained network each time
        net = build(name, recipe, classes, size, meta=False)
    if file is not None:
        load_all(net, read_weights(file, weights, key), weights, name)
    return net.eval().requires_grad_(False), adapter.eval(), file, [*transforms.mean, *transforms.std]


def load_all(net: nn.Module, state: dict[str, torch.Tensor], weights: str, name: str) -> None:
    """`state` into `net`, its classifier included (a file's made for other classes gets a head of their number),
    with model=torchvision's checks: every other weight must fit."""
    head = classifier(net)
    kept = {key.removeprefix(f"{head}."): value for key, value in state.items() if key.startswith(f"{head}.")}
    scores = kept.get("weight")
    new = scores is not None and scores.shape[0] != net.get_submodule(head).weight.shape[0]
    replace_head(net, int(scores.shape[0]) if new else 0, state, weights, name, new=new, key=NODE)  # all but the head
    if not kept:
        log.warning(
            "features: %s.weights=%s holds no weights for %s's %s: its class scores are random (the layers before it "
            "are the file's)",
            NODE,
            weights,
            name,
            head,
        )
        return
    try:
        net.get_submodule(head).load_state_dict(kept)
    except RuntimeError as exc:
        raise UserError(
            f"{NODE}.weights={weights} does not fit torchvision's {name} ({' '.join(str(exc).split())[:300]})"
        ) from None


def file_digest(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict's names and values (an untrained network's, which no file holds)."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


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
