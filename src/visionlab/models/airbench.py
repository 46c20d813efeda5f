"""An airbench-style ConvNet (KellerJordan/cifar10-airbench, airbench94): 94% on CIFAR-10 in seconds on a GPU.

patch whitening (2x2, fitted, frozen) -> GELU -> three conv groups -> global max pool -> linear -> x scale.
A conv group is conv3x3 -> maxpool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU. Its BatchNorm tricks:
no scale (fixed at 1; the next conv scales), a shift that learns `bias_lr_scale` times faster than
the other weights, eps 1e-12, and running statistics that follow the batches quickly (momentum 0.4
in torch's sense: airbench's 0.6 is the share kept). Convs start with identity (dirac) filters in
their first channels. The output is multiplied by `scale` (1/9): small logits at the start.

The whitening is fitted on the first training batch, or with `whiten_images: N` on the first N training
images as they are, unaugmented (airbench: 5,000), before the first step; its bias trains throughout, or
with `whiten_bias_epochs: N` for N epochs and then stays (airbench: 3). Both through the learner's model
hooks `fit_inputs` and `start_epoch` (training/learners/gradient.py).

Not here, because they belong to training: airbench's per-1024 hyperparameters, label smoothing
0.2, Nesterov SGD and its schedule are experiment=cifar10_gpu's (conf/experiment/cifar10_gpu.yaml and its options
conf/optimizer/cifar10_gpu/ and conf/loss/cifar10_gpu/); lookahead/EMA is training/lookahead.py and flip test-time
augmentation tta.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from visionlab.checks import Each, Maybe, Number, Switch, Whole
from visionlab.errors import SettingRejected
from visionlab.models.blocks import PatchWhitening


class ShiftOnlyBatchNorm(nn.BatchNorm2d):
    """BatchNorm without a learned scale, whose shift's gradient steps are `lr_scale` times larger.

    The shift is stored as shift / sqrt(lr_scale) and multiplied back in forward: SGD then moves the
    shift itself lr_scale times further per step (the gradient gains one factor, the step another),
    while weight decay shrinks it by the same fraction as every other weight, as airbench's
    separate parameter group (lr x 64, weight decay / 64) does, with one group for the optimizer.
    """

    def __init__(self, width: int, momentum: float, lr_scale: float):
        super().__init__(width, eps=1e-12, momentum=1 - momentum, affine=False)
        self.shift = nn.Parameter(torch.zeros(width))
        self.shift_gain = math.sqrt(lr_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            None,
            self.shift * self.shift_gain,
            self.training,
            self.momentum,
            self.eps,
        )


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """conv3x3 ('same', no bias) whose first in_channels filters start as the identity."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[: min(in_channels, out_channels)])
    return conv


class ConvGroup(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, momentum: float, lr_scale: float):
        super().__init__(
            dirac_conv(in_channels, out_channels),
            nn.MaxPool2d(2),
            ShiftOnlyBatchNorm(out_channels, momentum, lr_scale),
            nn.GELU(),
            dirac_conv(out_channels, out_channels),
            ShiftOnlyBatchNorm(out_channels, momentum, lr_scale),
            nn.GELU(),
        )


class Airbench(nn.Module):
    def __init__(
        self,
        in_shape: tuple[int, int, int],
        num_classes: int,
        widths: Annotated[Sequence[int], Each(Whole(1, unit="channels"), example="[64, 256, 256]")] = (64, 256, 256),
        whiten: Annotated[bool, Switch()] = True,
        whiten_kernel: Annotated[int, Whole(1, unit="pixels")] = 2,
        batchnorm_momentum: Annotated[float, Number(ge=0, lt=1, example=0.6)] = 0.6,
        bias_lr_scale: Annotated[float, Number(gt=0, example=64.0)] = 64.0,
        scale: Annotated[float, Number(gt=0, example=0.111)] = 1 / 9,
        whiten_images: Annotated[int | None, Maybe(Whole(1, unit="images"))] = None,
        whiten_bias_epochs: Annotated[int | None, Maybe(Whole(0, unit="epochs"))] = None,
    ):
        super().__init__()
        if not whiten and (whiten_images is not None or whiten_bias_epochs is not None):
            raise SettingRejected(
                f"model.whiten_images={whiten_images} and model.whiten_bias_epochs={whiten_bias_epochs} set the "
                "whitening, which model.whiten=false leaves out: set them to null, or model.whiten=true"
            )
        self.whiten_images = whiten_images
        self.whiten_bias_epochs = whiten_bias_epochs
        channels = in_shape[0]
        width = 2 * channels * whiten_kernel**2
        # whiten=false: the same shape, learned from scratch instead (to see what whitening buys)
        first = PatchWhitening(channels, whiten_kernel) if whiten else nn.Conv2d(channels, width, whiten_kernel)
        layers: list[nn.Module] = [first, nn.GELU()]
        for out in widths:
            layers.append(ConvGroup(width, out, batchnorm_momentum, bias_lr_scale))
            width = out
        self.features = nn.Sequential(*layers)
        if min(feature_side(side, whiten_kernel, len(widths)) for side in in_shape[1:]) < 1:
            raise SettingRejected(
                f"model.widths={list(widths)} pools a {in_shape[1]}x{in_shape[2]} image away to nothing "
                f"(each width halves it once): use fewer widths or larger images"
            )
        self.classifier = nn.Sequential(
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(width, num_classes, bias=False)
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)) * self.scale

    def fit_inputs(self, first: Callable[[int], torch.Tensor]) -> None:
        """Before the first step: with whiten_images, fit the whitening on that many clean training images
        (`first(n)`), which cover the data better than the first augmented batch that fits it otherwise."""
        if self.whiten_images is not None:
            self.features[0].fit(first(self.whiten_images))

    def start_epoch(self, epoch: int) -> None:
        """At each epoch's start (1 for the first; a resumed run's too): with whiten_bias_epochs, the whitening's
        bias trains in the first that many epochs only, then takes no more steps."""
        if self.whiten_bias_epochs is not None:
            self.features[0].conv.bias.requires_grad_(epoch <= self.whiten_bias_epochs)


def feature_side(side: int, whiten_kernel: int, groups: int) -> int:
    """An image side after the whitening conv (no padding) and the conv groups (each pools by 2, rounding
    down); 0 once nothing is left, where torch would fail on a tensor."""
    side -= whiten_kernel - 1
    for _ in range(groups):
        if side < 2:
            return 0
        side //= 2
    return side
