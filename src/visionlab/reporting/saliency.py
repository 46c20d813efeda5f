"""Where a network looks when it decides: gradient saliency and Grad-CAM, for the class it predicts.

Both come out of one forward and one backward pass over a few images, in eval mode:
- gradient saliency (Simonyan, Vedaldi and Zisserman 2014): |d score / d pixel| of the predicted
  class's score, the largest over the colour channels: which pixels would change the score most;
- Grad-CAM (Selvaraju et al. 2017) on the last feature map, the last module whose output is
  `[N, C, h, w]` larger than 1x1 (a CNN's last conv stage): each channel weighted by the mean
  gradient of the score over its positions, summed over channels, negatives set to 0. Coarser
  (the feature map's h x w, shown stretched to the image), but it says which region the features
  that decided the class came from.

Our own few lines, not captum's: `import captum.attr` imports matplotlib, which would slow every
run's start, and the pictures avoid it (visuals.py). The tests check both maps against captum's `Saliency`
and `LayerGradCam`. Gradients go to the inputs and the feature map only (`torch.autograd.grad`),
never into the parameters' `.grad`, so a picture never touches training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.data import DeviceSplit
from visionlab.reporting import visuals

CORRECT = 8  # right answers shown after the mistakes
CANDIDATES = 32  # the first test images, among which the right answers are looked for
IMAGES_PER_ROW = 4  # each with its two maps beside it: 12 tiles a row


@dataclass
class Attributions:
    scores: torch.Tensor  # [N, classes]: the model's output for the images
    target: torch.Tensor  # [N]: the class explained, the predicted one unless asked
    saliency: torch.Tensor  # [N, H, W]: |d score / d input|, the largest over channels
    cam: torch.Tensor | None  # [N, h, w]: Grad-CAM at the feature map's resolution; None: the model has none
    cam_layer: str | None  # that feature map's module, as named in the model ("features")


@contextlib.contextmanager
def evaluating(model: nn.Module) -> Iterator[None]:
    """The model in eval mode (BatchNorm's running statistics, no dropout), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def attributions(model: nn.Module, x: torch.Tensor, target: torch.Tensor | None = None) -> Attributions:
    """Saliency and Grad-CAM of `target`'s scores (default: each image's predicted class) for normalized images `x`.

    Works inside `torch.inference_mode()` too (the pictures run under it): the images are copied
    out of it. The model's train/eval mode is restored afterwards.
    """
    maps: list[tuple[str, torch.Tensor]] = []  # every feature map, in the order the modules finished

    def keep(name: str):
        def hook(module, inputs, output):
            if isinstance(output, torch.Tensor) and output.dim() == 4 and output.shape[2] * output.shape[3] > 1:
                maps.append((name, output))

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in model.named_modules() if name]
    try:
        with evaluating(model), torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            scores = model(x)
            if target is None:
                target = scores.detach().argmax(1)
            chosen = scores.gather(1, target.view(-1, 1)).sum()
            layer, feature_map = maps[-1] if maps else (None, None)
            grads = torch.autograd.grad(chosen, [x] + ([feature_map] if layer else []))
    finally:
        for handle in handles:
            handle.remove()
    cam = None
    if layer:
        weights = grads[1].mean(dim=(2, 3), keepdim=True)
        cam = (weights * feature_map.detach()).sum(1).clamp_min(0)
    return Attributions(scores.detach(), target, grads[0].abs().amax(1), cam, layer)


def heat_tiles(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Maps `[N, h, w]` as RGB tiles `[N, 3, H, W]` in [0, 1]: each stretched to its own range, white (0) to dark blue
    (its largest)."""
    maps = maps.detach().float().cpu().unsqueeze(1)
    if maps.shape[2:] != size:
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return visuals.blues(visuals.rescaled(maps)[:, 0]).permute(0, 3, 1, 2).float() / 255


def explained_picture(
    images: torch.Tensor, found: Attributions, captions: Sequence[str], colors: Sequence[str], title: str
) -> torch.Tensor:
    """Each image (uint8 `[N, C, H, W]`, as stored) with its saliency and Grad-CAM maps beside it, as one picture.

    `captions` and `colors` are the images'; the maps go uncaptioned (the title says what they
    are, `maps_title`): a third of the words to draw.
    """
    size = tuple(images.shape[2:])
    tiles = [images.cpu().float() / 255, heat_tiles(found.saliency, size)]
    if found.cam is not None:
        tiles.append(heat_tiles(found.cam, size))
    per_image = len(tiles)
    interleaved = torch.stack([tile.expand(-1, 3, -1, -1) for tile in tiles], 1).flatten(0, 1)
    all_captions = [text for caption in captions for text in (caption, *[""] * (per_image - 1))]
    all_colors = [text for color in colors for text in (color, *["black"] * (per_image - 1))]
    return visuals.picture(
        interleaved, IMAGES_PER_ROW * per_image, title=title, captions=all_captions, caption_colors=all_colors
    )


def maps_title(found: Attributions) -> str:
    """What the maps beside each image are, for a picture's title."""
    cam = "" if found.cam is None else f", Grad-CAM on {found.cam_layer} ({found.cam.shape[1]}x{found.cam.shape[2]})"
    return f"image, then |d score/d pixel|{cam} of the predicted class"


def saliency_picture(
    model: nn.Module, split: DeviceSplit, mistakes: torch.Tensor, classes: Sequence[str], split_name: str = "test"
) -> torch.Tensor | None:
    """The given mistakes (split indices, most confident first) and the first CORRECT right answers,
    each beside its maps.

    None for a model without gradients (kNN), or nothing to show. `mistakes` is what `MistakeFinder.mistakes()[0]`
    returns after the test pass; the right answers are found among the first CANDIDATES images.
    """
    if not any(p.requires_grad for p in model.parameters()):
        return None
    device = split.labels.device
    with torch.inference_mode(), evaluating(model):
        candidates, labels = split.batch(torch.arange(min(CANDIDATES, len(split)), device=device))
        right = (model(candidates).argmax(1) == labels).nonzero().flatten()[:CORRECT]
    shown = torch.cat([mistakes.to(device), right])
    if not len(shown):
        return None
    x, labels = split.batch(shown)
    found = attributions(model, x, None)
    confidence = found.scores.float().softmax(1).amax(1).tolist()
    predicted, true = found.target.tolist(), labels.tolist()
    captions = [
        f"{classes[p]} ({visuals.floor_percent(c)})\ntrue {classes[t]}" for p, c, t in zip(predicted, confidence, true)
    ]
    colors = ["forestgreen" if p == t else "firebrick" for p, t in zip(predicted, true)]
    title = (
        f"{split_name}: {len(mistakes)} most confident mistakes (red), {len(right)} right (green); {maps_title(found)}"
    )
    return explained_picture(split.images[shown], found, captions, colors, title)
