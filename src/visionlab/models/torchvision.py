"""Any classification network of `torchvision.models`, pretrained or not, with its head made for the data's classes.

`model=torchvision model.name=resnet18`: the builder's architecture, its weights (one of the builder's
weights such as DEFAULT, a local file of a state dict, or none), its classifier head replaced by a new
layer for the dataset's number of classes, and an input adapter as the first stage: grey images
repeated to three channels, resized to the size the weights were trained at, and brought to the
weights' normalization. The adapter is part of the model, so the data pipeline is that of every other
model and vl-eval and vl-predict, which rebuild the model from the run's config, see what training saw.

Files are read safely: a state dict is loaded with `torch.load(weights_only=True)`, which builds tensors
and plain containers and runs no code, whoever made the file (torchvision's own loader reads its hub
files with weights_only=False). A config read back from a checkpoint reads and downloads nothing
(`fetch`, trust.py): the checkpoint holds every weight. docs/models.md, "torchvision".
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision import models

from visionlab.checks import Each, Either, Maybe, OneOf, Rule, Text, Whole, WritesOutside, shown
from visionlab.errors import SettingRejected, UserError

log = logging.getLogger(__name__)

FETCHES = ("download", "cache", "none")
TRAINS = ("all", "head")
NORMALIZATIONS = ("auto", "weights", "data")
# What torchvision's builders set when they load weights, which a state dict does not record: the networks
# trained with auxiliary classifiers read their input as the weights' normalization (transform_input); the
# auxiliary classifiers only serve training in torchvision's recipe, so they are left out (as torchvision does
# with aux_logits=False) and their weights in a file skipped.
AUXILIARY = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}
# Networks built for one input size (position embeddings, attention grids): the builder's argument naming it.
SIZED = {"vit_": "image_size", "maxvit_": "input_size"}
# DenseNet's files on torchvision's servers name some weights as modules once could ("norm.1"); torchvision renames
# them when it loads one (models/densenet.py), and so does this.
DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$"
)
HASH = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's convention: file-<first digits of its sha256>.ext


@functools.cache
def builders() -> tuple[str, ...]:
    """torchvision's classification networks (not its detection, segmentation, video or quantized ones)."""
    return tuple(models.list_models(module=models))


class Builder(Rule):
    """A name of `builders()` (or null, where `null_ok`); a misspelled one is answered with the names closest to it."""

    verdict = "unknown"

    def __init__(self, null_ok: bool = False):
        self.null_ok = null_ok

    def accepts(self, value: Any) -> bool:
        return (value is None and self.null_ok) or (isinstance(value, str) and value in builders())

    def noun(self, plural: bool = False) -> str:
        names = builders()
        return (
            f"one of the {len(names)} classification models of torchvision {torchvision.__version__}: "
            + ", ".join(names)
            + (", or null" if self.null_ok else "")
        )

    def check(self, key: str, value: Any) -> None:
        if not self.accepts(value):
            hint = did_you_mean_one_of(str(value), builders(), 3)
            raise UserError(f"{key}={shown(value)} is {self.verdict}: {hint}use {self.noun()}")


def did_you_mean_one_of(word: str, names: Sequence[str], most: int) -> str:
    """`did you mean resnet18, resnet152 or resnet101? `, the `most` names closest to `word`, or ""."""
    close = difflib.get_close_matches(word, names, n=most, cutoff=0.5)
    if not close:
        return ""
    return f"did you mean {' or '.join([', '.join(close[:-1]), close[-1]] if len(close) > 1 else close)}? "


InputSize = Annotated[Any, Maybe(Either(OneOf("auto"), Each(Whole(1, unit="pixels"), length=2, example="[224, 224]")))]


class InputAdapter(nn.Module):
    """The network's first stage: the images as the pipeline gives them, as the weights expect them.

    Grey images are repeated to three channels. Every image reaching a model was standardized per channel
    with the training split's mean and std (data/splits.py); `scale` and `shift` take that to the
    weights' normalization, (pixel - mean) / std with the weights' mean and std, or leave it as it is
    (1 and 0). They are buffers, so a checkpoint carries them and vl-eval needs no statistics. Then the
    images are resized (bilinear, antialiased when shrinking) to `size`, whole: no crop.
    """

    def __init__(self, channels: int, size: tuple[int, int], scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.channels = channels
        self.size = size
        self.register_buffer("scale", scale.view(1, 3, 1, 1).clone())
        self.register_buffer("shift", shift.view(1, 3, 1, 1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x * self.scale + self.shift
        if tuple(x.shape[-2:]) != self.size:
            shrinking = self.size[0] < x.shape[-2] or self.size[1] < x.shape[-1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=shrinking)
        return x

    def extra_repr(self) -> str:
        return f"channels={self.channels}, size={self.size}"


class TorchvisionModel(nn.Module):
    """`net`, one of torchvision's classification networks, behind `adapter`; `head` names its new last layer.

    name: the builder, as `torchvision.models.get_model` takes it (resnet18, vit_b_16, ...).
    weights: one of the builder's weights (DEFAULT, IMAGENET1K_V1, ...), read from torch's hub cache
        (torch.hub.get_dir()/checkpoints/, where torchvision keeps them); a file holding a state dict of
        the network (torch.save(net.state_dict(), ...)); or None: random values.
    fetch: download (a missing hub file is downloaded into the cache), cache (never downloads: a missing
        file stops the run, naming where to put it), none (reads no weights at all: the architecture and
        input of `weights` with random values; what a config read back from a checkpoint has).
    train: all (every weight learns: fine-tuning) or head (a linear probe: only the new head learns, the
        rest keeps its weights and stays in eval mode, so BatchNorm's running statistics stay the weights').
    input_size: [h, w] the images are resized to; None: their own size; auto: the size the weights were
        evaluated at (weights.transforms()'s crop size; a file: the builder's DEFAULT weights'), or their
        own size without weights.
    normalize: weights (the weights' mean and std; without weights, the DEFAULT weights': ImageNet's),
        data (the training split's own, as every model gets them), auto (weights when there are weights).
    pixel_stats: the training split's per-channel (mean, std) in [0, 1] units, with which the images were
        standardized; the run gives them (experiment.fresh_model). Without them (a checkpoint's model
        before its buffers are loaded, a model built by hand) the images are taken as they come.
    """

    def __init__(
        self,
        in_shape: tuple[int, ...],
        num_classes: int,
        name: Annotated[str, Builder()] = "resnet18",
        weights: Annotated[str | None, Maybe(Text())] = None,
        fetch: Annotated[str, OneOf(*FETCHES), WritesOutside(off="none")] = "download",
        train: Annotated[str, OneOf(*TRAINS)] = "all",
        input_size: InputSize = "auto",
        normalize: Annotated[str, OneOf(*NORMALIZATIONS)] = "auto",
        pixel_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        super().__init__()
        if len(in_shape) != 3 or in_shape[0] not in (1, 3):
            raise SettingRejected(
                f"model.name={name} takes grey or colour images, and these are {'x'.join(map(str, in_shape))}: "
                "use images of 1 or 3 channels (dataset.channels=3 for a folder)"
            )
        Builder().check("model.name", name)
        self.name = name
        self.frozen = train == "head"
        family = models.get_model_weights(name)
        chosen, file = weights_of(name, weights, fetch)
        recipe = chosen if chosen is not None else (family.DEFAULT if weights is not None else None)
        size = input_side(name, recipe, input_size, tuple(in_shape[1:]))
        if chosen is not None and file is not None:  # the settings fit: now the file, downloaded if need be
            file = cached(chosen, weights, name, fetch)
        normalized = normalize == "weights" or (normalize == "auto" and weights is not None)
        scale, shift = conversion(recipe or family.DEFAULT, normalized, pixel_stats)
        self.adapter = InputAdapter(in_shape[0], size, scale, shift)  # first: the layer table reads in order
        meta = torch.get_default_device().type == "meta"  # budget.py's shapes-only copy: no file is read
        self.net = build(name, recipe, num_classes, size, meta)
        state = read_weights(file, weights) if file is not None and not meta else None
        self.head = replace_head(self.net, num_classes, state, weights, name, new=recipe is not None)
        if self.frozen:
            for parameter_name, parameter in self.net.named_parameters():
                parameter.requires_grad_(parameter_name.startswith(f"{self.head}."))
            self.net.train(False)
        if not meta:
            log.info(
                "model: torchvision's %s, %s; its %s new, for %d classes; %s; %s",
                name,
                "random weights"
                if weights is None
                else f"weights {weights} from {file}"
                if file
                else "no weights read (model.fetch=none)",
                self.head,
                num_classes,
                self.adapter_said(in_shape, normalized),
                "train=head: only the head learns, the rest frozen in eval mode" if self.frozen else "train=all",
            )

    def adapter_said(self, in_shape: tuple[int, ...], normalized: bool) -> str:
        said = ["grey repeated to 3 channels"] if in_shape[0] == 1 else []
        if self.adapter.size != tuple(in_shape[1:]):
            said.append(f"resized from {in_shape[1]}x{in_shape[2]} to {self.adapter.size[0]}x{self.adapter.size[1]}")
        said.append("normalized as its weights were" if normalized else "normalized with the training split's stats")
        return "input " + ", ".join(said)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.adapter(x))

    def train(self, mode: bool = True) -> TorchvisionModel:
        """As nn.Module's; with train=head, everything but the head stays in eval mode (BatchNorm's statistics and
        dropout as the weights had them), whatever the trainer asks."""
        super().train(mode)
        if self.frozen:
            self.net.train(False)
            self.net.get_submodule(self.head).train(mode)
        return self


def weights_of(name: str, weights: str | None, fetch: str, key: str = "model") -> tuple[Any, Path | None]:
    """The builder's weights that `weights` names (None for a file or none), and the file to read them from
    (None: nothing to read; for the builder's weights, their place in the hub cache, where they may be missing).
    `key`: the config node whose `weights` these are, as the messages name it (model, features.network)."""
    if weights is None:
        return None, None
    family = models.get_model_weights(name)
    names = list(family.__members__)
    if weights in names or weights.removeprefix(f"{family.__name__}.") in names:
        chosen = family[weights.removeprefix(f"{family.__name__}.")]
        return chosen, None if fetch == "none" else hub_file(chosen)
    looks_like_file = "/" in weights or "." in weights or Path(weights).expanduser().exists()
    if not looks_like_file:
        hint = did_you_mean_one_of(weights, names, 2)
        raise SettingRejected(
            f"{key}.weights={weights} is neither one of {name}'s weights nor a file: {hint}use one of "
            f"{', '.join(names)}, the path of a state dict saved with torch.save, or null (random weights)"
        )
    if fetch == "none":
        return None, None
    file = Path(weights).expanduser()
    if not file.is_file():
        raise SettingRejected(
            f"{key}.weights={weights}: no such file (use the path of a state dict saved with torch.save, one of "
            f"{name}'s weights {', '.join(names)}, or null for random weights)"
        )
    return None, file


def hub_file(chosen: Any) -> Path:
    """Where torch.hub, and so torchvision, keeps these weights: <torch.hub.get_dir()>/checkpoints/<the URL's file>."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(chosen.url).path).name


def cached(chosen: Any, weights: str, name: str, fetch: str, key: str = "model") -> Path:
    """The weights' file in torch's hub cache, downloaded there first when missing and `fetch` is download."""
    file = hub_file(chosen)
    if file.is_file():
        return file
    put = f"put the file from {chosen.url} at {file} (or set TORCH_HOME to the folder whose hub/checkpoints/ holds it)"
    if fetch == "cache":
        raise UserError(
            f"{key}.weights={weights}: {name}'s weights are not in torch's hub cache ({key}.fetch=cache): {put}, "
            f"or let it download them with {key}.fetch=download"
        )
    log.info("model: downloading %s's weights %s from %s to %s", name, chosen, chosen.url, file)
    file.parent.mkdir(parents=True, exist_ok=True)
    digits = HASH.search(file.name)
    try:
        torch.hub.download_url_to_file(chosen.url, str(file), digits[1] if digits else None, progress=False)
    except Exception as exc:  # no network, a proxy, a bad checksum: the same advice
        detail = " ".join(str(exc).split())[:200] or "no detail"
        raise UserError(
            f"{key}.weights={weights}: {name}'s weights are not in torch's hub cache and could not be downloaded "
            f"({type(exc).__name__}: {detail}): {put}"
        ) from None
    return file


def input_side(name: str, recipe: Any, input_size: Any, own: tuple[int, int], key: str = "model") -> tuple[int, int]:
    """The size the network is given, and whether it can take it (the weights' `min_size`; a ViT its one size)."""
    if input_size == "auto":
        crop = recipe.transforms().crop_size if recipe is not None else None  # [224], or [h, w]
        size = own if crop is None else (crop[0], crop[-1])
    elif input_size is None:
        size = own
    else:
        size = (int(input_size[0]), int(input_size[1]))
    family = models.get_model_weights(name)
    smallest = (recipe or family.DEFAULT).meta["min_size"]
    said = f"{key}.input_size=null" if input_size is None else f"{key}.input_size={shown(input_size)}"
    if size[0] < smallest[0] or size[1] < smallest[1]:
        raise SettingRejected(
            f"{said} gives {name} {size[0]}x{size[1]} images, and it takes at least {smallest[0]}x{smallest[1]}: "
            f"set {key}.input_size=[{smallest[0]}, {smallest[1]}] or larger"
        )
    fixed = next((argument for prefix, argument in SIZED.items() if name.startswith(prefix)), None)
    if fixed and recipe is not None and size != tuple(smallest):
        raise SettingRejected(
            f"{said} gives {name} {size[0]}x{size[1]} images, and its weights take {smallest[0]}x{smallest[1]} only: "
            f"set {key}.input_size=auto"
        )
    if fixed == "image_size" and size[0] != size[1]:
        raise SettingRejected(f"{said}: {name} takes square images only: give it [{size[0]}, {size[0]}]")
    return size


def build(name: str, recipe: Any, num_classes: int, size: tuple[int, int], meta: bool) -> nn.Module:
    """The builder's network, random: shaped as `recipe`'s weights (their class count, the settings torchvision's
    builder gives them) or, without weights, for `num_classes` and `size`."""
    arguments: dict[str, Any] = {"num_classes": len(recipe.meta["categories"]) if recipe else num_classes}
    if name in AUXILIARY:
        arguments |= {"aux_logits": False, "init_weights": recipe is None}
        if recipe is not None:
            arguments["transform_input"] = True
    fixed = next((argument for prefix, argument in SIZED.items() if name.startswith(prefix)), None)
    if fixed:
        arguments[fixed] = size[0] if fixed == "image_size" else list(size)
    try:
        try:
            return models.get_model(name, weights=None, **arguments)
        except NotImplementedError:
            if not meta:
                raise
            # RegNet works out its widths with tensors while it is built, which the meta device cannot read back
            with torch.device("cpu"):
                return models.get_model(name, weights=None, **arguments).to("meta")
    except (ValueError, TypeError, AssertionError) as exc:
        raise SettingRejected(f"torchvision's {name} rejected {arguments}: {' '.join(str(exc).split())}") from exc


def read_weights(file: Path, weights: str, key: str = "model") -> dict[str, torch.Tensor]:
    """A state dict from `file`, read without running any code in it (weights_only)."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled code, a file that is no torch.save, a truncated one
        detail = " ".join(str(exc).split())[:200] or "no detail"
        raise UserError(
            f"{key}.weights={weights}: {file} could not be read as a state dict ({type(exc).__name__}: {detail}); "
            "weights are read with torch.load(weights_only=True), which builds tensors only and runs no code"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(
            f"{key}.weights={weights}: {file} holds a {type(state).__name__}, not a state dict "
            "(save one with torch.save(net.state_dict(), file))"
        )
    for key in list(state):  # in place: the dict's version records, which modules read as they load, stay
        if old := DENSENET_KEY.match(key):
            state[old[1] + old[2]] = state.pop(key)
    return state


def classifier(net: nn.Module) -> str:
    """The name of the layer that gives the class scores: the last Linear (fc, classifier.1, heads.head, ...), or,
    in a network without one (SqueezeNet), the last Conv2d."""
    for kind in (nn.Linear, nn.Conv2d):
        found = [name for name, module in net.named_modules() if isinstance(module, kind)]
        if found:
            return found[-1]
    raise SettingRejected(f"{type(net).__name__} has no Linear or Conv2d layer to give the class scores")


def replace_head(
    net: nn.Module,
    num_classes: int,
    state: dict[str, torch.Tensor] | None,
    weights: str | None,
    name: str,
    new: bool,
    key: str = "model",
) -> str:
    """`state` loaded into `net` (all but its head, whose classes are the weights'), then, if `new`, a new head for
    `num_classes` (without weights the builder made the net for them); returns the head's name."""
    head = classifier(net)
    old = net.get_submodule(head)
    if state is not None:
        skipped = (f"{head}.", *AUXILIARY.get(name, ()))
        for key in [key for key in state if key.startswith(skipped)]:
            del state[key]
        try:
            missing, unexpected = net.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # a tensor of another shape
            raise UserError(
                f"{key}.weights={weights} does not fit torchvision's {name} ({' '.join(str(exc).split())[:300]})"
            ) from None
        missing = [key for key in missing if not key.startswith(f"{head}.")]
        if missing or unexpected:
            which = f"missing {', '.join(missing[:3])}" if missing else f"unexpected {', '.join(unexpected[:3])}"
            raise UserError(
                f"{key}.weights={weights} does not fit torchvision's {name}: {which}"
                f"{' ...' if len(missing or unexpected) > 3 else ''} (a state dict of {name} itself, as "
                f"torch.save({name}.state_dict(), file) writes it)"
            )
    if not new:
        return head
    device = old.weight.device
    if isinstance(old, nn.Linear):
        new: nn.Module = nn.Linear(old.in_features, num_classes, bias=old.bias is not None, device=device)
    else:
        new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, bias=old.bias is not None, device=device)
    parent, _, attribute = head.rpartition(".")
    setattr(net.get_submodule(parent), attribute, new)
    return head


def conversion(
    recipe: Any, normalized: bool, pixel_stats: Sequence[torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adapter's per-channel scale and shift: from the pipeline's standardization (x - m) / s, per the training
    split's m and s, to (x - mean) / std with the weights' mean and std, or no change."""
    if not normalized or pixel_stats is None:
        return torch.ones(3), torch.zeros(3)
    transforms = recipe.transforms()
    mean, std = torch.tensor(transforms.mean), torch.tensor(transforms.std)
    # a grey image's one channel is each of the three
    data_mean, data_std = (torch.as_tensor(v, dtype=torch.float32).flatten().cpu().expand(3) for v in pixel_stats)
    return data_std / std, (data_mean - mean) / std
