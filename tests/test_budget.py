"""The memory check's shape-only copy of the model (budget.py): measured on empty CPU weights where it is small,
with the table the meta device gives, the random state untouched, and without importing sympy."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from visionlab.budget import EMPTIED_ON_THE_CPU, estimate, measurable
from visionlab.data.base import Plan
from visionlab.features import Features
from visionlab.models.airbench import Airbench
from visionlab.models.cnn import CNN
from visionlab.models.linear import Linear
from visionlab.models.mlp import MLP
from visionlab.models.resnet import ResNet
from visionlab.models.torchvision import TorchvisionModel
from visionlab.reporting.layer_summary import layer_table

TRAINER = SimpleNamespace(batch_size=64, eval_batch_size=256)  # what the estimate reads of trainer.*

MODELS = {
    "linear": lambda: Linear((1, 28, 28), 10),
    "mlp": lambda: MLP((1, 28, 28), 10, hidden=[64, 32], batchnorm=True, dropout=0.1),
    "cnn": lambda: CNN((1, 28, 28), 10),
    "resnet_small": lambda: ResNet((3, 32, 32), 10),
    "airbench": lambda: Airbench((3, 32, 32), 10),
    "googlenet": lambda: TorchvisionModel((1, 28, 28), 10, name="googlenet", weights="DEFAULT", fetch="none"),
}


class TiedWeights(nn.Module):
    """One weight in two layers, as a language model ties its embedding and its output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(8, 8)
        self.second = nn.Linear(8, 8)
        self.second.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x.flatten(1)))


def rows(table) -> list[tuple]:
    return [(layer.name, layer.kind, layer.shape, layer.params, layer.flops) for layer in table.layers]


@pytest.mark.parametrize("name", [*MODELS, "tied"])
def test_the_emptied_copy_gives_the_meta_copys_table_on_the_cpu_and_draws_no_random_number(name):
    build = MODELS.get(name, TiedWeights)
    in_shape = (1, 8) if name == "tied" else ((3, 32, 32) if name in ("resnet_small", "airbench") else (1, 28, 28))
    with torch.device("meta"):
        on_meta, copied = build(), build()
    random_state = torch.get_rng_state()
    emptied = measurable(copied)
    assert {tensor.device.type for tensor in [*emptied.parameters(), *emptied.buffers()]} == {"cpu"}
    assert torch.equal(torch.get_rng_state(), random_state)
    measured, expected = layer_table(emptied, in_shape), layer_table(on_meta, in_shape)
    totals = (measured.params, measured.trainable, measured.flops)
    assert totals == (expected.params, expected.trainable, expected.flops)
    assert rows(measured) == rows(expected) and measured.flops > 0
    if name == "tied":
        assert emptied.first.weight is emptied.second.weight and measured.params == 8 * 8 + 2 * 8


def test_a_model_over_the_limit_stays_on_the_meta_device():
    with torch.device("meta"):
        large = nn.Linear(EMPTIED_ON_THE_CPU, 2)
    assert measurable(large).weight.device.type == "meta"


class KeepsATensorOfItsOwn(nn.Module):
    """A plain tensor attribute, neither parameter nor buffer: built on meta, it stays there when the weights move."""

    def __init__(self, in_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.layer = nn.Linear(4, num_classes)
        self.offset = torch.zeros(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x.flatten(1) + self.offset)


def test_a_model_that_keeps_a_tensor_of_its_own_is_measured_on_the_meta_device_as_before():
    need = estimate(Plan((1, 2, 2), 60, 20, 3), KeepsATensorOfItsOwn, Features(), TRAINER, training=True)
    assert need.model == "KeepsATensorOfItsOwn, 15 parameters, 24 FLOPs per image"


def test_the_memory_check_of_a_cnn_run_imports_no_sympy():
    """What the change is for: on the meta device the layer table's image went through torch's Python reference ops,
    which import sympy (about a second of CPU at every run's start)."""
    script = """
import sys, torch
from visionlab.budget import estimate
from visionlab.data.base import Plan
from visionlab.features import Features
from visionlab.models.cnn import CNN
from types import SimpleNamespace
trainer = SimpleNamespace(batch_size=64, eval_batch_size=256)
need = estimate(Plan((1, 28, 28), 600, 200, 10), CNN, Features(), trainer, training=True)
print(need.model, "sympy" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CNN,", "98,554", "parameters,", "4.0", "MFLOPs", "per", "image", "False"]
