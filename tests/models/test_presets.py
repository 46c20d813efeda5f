"""The LeNet-5 and small-ResNet presets: their shapes, and that data decides input and class count."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_train, config_error
from visionlab.models.resnet import BasicBlock, ResNet


def build(name: str, in_shape=(1, 28, 28), num_classes=10, overrides=()) -> nn.Module:
    return instantiate(compose_train([f"model={name}", *overrides]).model, in_shape=in_shape, num_classes=num_classes)


def test_lenet5_has_two_5x5_convs_of_6_and_16_filters_and_fc_120_84():
    model = build("lenet5")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    fcs = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(c.out_channels, c.kernel_size) for c in convs] == [(6, (5, 5)), (16, (5, 5))]
    assert [f.out_features for f in fcs] == [120, 84, 10]
    assert fcs[0].in_features == 16 * 7 * 7


@pytest.mark.parametrize("in_shape,num_classes", [((1, 28, 28), 10), ((3, 32, 32), 10), ((3, 32, 32), 7)])
@pytest.mark.parametrize("name", ["lenet5", "resnet_small"])
def test_presets_take_shape_and_classes_from_the_data(name, in_shape, num_classes):
    model = build(name, in_shape, num_classes)
    assert model(torch.zeros(2, *in_shape)).shape == (2, num_classes)


def test_resnet_small_stages_halve_resolution_and_widen():
    model = ResNet((3, 32, 32), 10, widths=[16, 32, 64], blocks=2)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    assert len(blocks) == 6
    # Only the first block of each later stage changes shape, so only it needs a projection shortcut.
    assert [not isinstance(b.shortcut, nn.Identity) for b in blocks] == [False, False, True, False, True, False]
    assert model.features(torch.zeros(1, 3, 32, 32)).shape == (1, 64, 8, 8)


@pytest.mark.parametrize("override", ["model.widths=[]", "model.blocks=0"])
def test_bad_resnet_values_are_user_errors(override):
    assert config_error(["model=resnet_small", override]).startswith(f"{override} is invalid")


@pytest.mark.parametrize("activation,pooled_first", [("relu", True), ("tanh", True), ("gelu", False)])
def test_cnn_pools_before_a_monotone_activation_with_the_same_outputs_and_gradients(activation, pooled_first):
    from visionlab.models.cnn import CNN

    torch.manual_seed(0)
    model = CNN((3, 16, 16), 10, channels=[8, 16], convs_per_stage=2, activation=activation, dropout=0.0).train()
    kinds = [type(layer).__name__ for layer in model.features]
    assert (kinds.index("MaxPool2d") == 5) == pooled_first  # a stage: conv, BN, act, conv, BN, pool, act (or act, pool)
    # the textbook order, conv -> BN -> activation -> pool, built from the very same layers
    textbook = nn.Sequential(
        *[
            layer
            for stage in (model.features[:7], model.features[7:])
            for layer in sorted(stage, key=lambda layer: isinstance(layer, nn.MaxPool2d))
        ]
    )
    images = torch.randn(4, 3, 16, 16)
    ours, theirs = model.classifier(model.features(images)), model.classifier(textbook(images))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    grads = [torch.autograd.grad(out.square().sum(), model.features[0].weight)[0] for out in (ours, theirs)]
    torch.testing.assert_close(grads[0], grads[1])
    assert list(model.state_dict()) == list(
        CNN((3, 16, 16), 10, channels=[8, 16], convs_per_stage=2, activation="gelu", dropout=0.0).state_dict()
    )
