"""optimizer=muon (muon.py): airbench94_muon's update on the conv filters, torch's SGD on the rest, one optimizer."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from torch import nn

from tests.conftest import compose_train, config_error
from visionlab.muon import Muon


def reference_muon_step(p: torch.Tensor, grad: torch.Tensor, buf: torch.Tensor, lr: float, momentum: float) -> None:
    """airbench94_muon.py's Muon.step and zeropower_via_newtonschulz5 (3 steps), transcribed, Nesterov on."""
    buf.mul_(momentum).add_(grad)
    g = grad.add(buf, alpha=momentum)
    p.mul_(len(p) ** 0.5 / p.norm())
    G = g.reshape(len(g), -1)
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16()
    X /= X.norm() + 1e-7
    if G.size(0) > G.size(1):
        X = X.T
    for _ in range(3):
        A = X @ X.T
        B = b * A + c * A @ A
        X = a * X + B @ X
    if G.size(0) > G.size(1):
        X = X.T
    p.add_(X.view(g.shape), alpha=-lr)


def test_the_filters_take_airbenchs_muon_step_and_the_rest_torchs_sgd():
    generator = torch.Generator().manual_seed(0)
    filters = nn.Parameter(torch.randn(6, 3, 3, 3, generator=generator))  # 6 x 27: wide
    tall = nn.Parameter(torch.randn(40, 2, 2, 2, generator=generator))  # 40 x 8: transposed inside
    bias = nn.Parameter(torch.randn(6, generator=generator))
    head = nn.Parameter(torch.randn(10, 6, generator=generator))
    optimizer = Muon([filters, tall, bias, head], lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    expected = {name: p.detach().clone() for name, p in (("filters", filters), ("tall", tall))}
    buffers = {name: torch.zeros_like(p) for name, p in expected.items()}
    rest = [nn.Parameter(bias.detach().clone()), nn.Parameter(head.detach().clone())]
    sgd = torch.optim.SGD(rest, lr=0.1, momentum=0.85, nesterov=True, weight_decay=0.01)
    for _ in range(3):  # momentum carries over steps
        grads = [torch.randn(p.shape, generator=generator) for p in (filters, tall, bias, head)]
        for p, g in zip([filters, tall, bias, head], grads):
            p.grad = g.clone()
        optimizer.step()
        for (name, p), g in zip(expected.items(), grads):
            reference_muon_step(p, g, buffers[name], lr=0.24, momentum=0.6)
        for p, g in zip(rest, grads[2:]):
            p.grad = g.clone()
        sgd.step()
    torch.testing.assert_close(filters.detach(), expected["filters"])
    torch.testing.assert_close(tall.detach(), expected["tall"])
    assert torch.equal(bias.detach(), rest[0].detach()) and torch.equal(head.detach(), rest[1].detach())
    assert [g["muon"] for g in optimizer.param_groups] == [False, True]


def test_the_update_is_near_orthogonal_and_the_filters_keep_their_norm():
    generator = torch.Generator().manual_seed(1)
    filters = nn.Parameter(torch.randn(8, 4, 3, 3, generator=generator) * 5)
    optimizer = Muon([filters], muon_lr=1e-3, muon_momentum=0.0, ns_steps=5)
    filters.grad = torch.randn(filters.shape, generator=generator)
    before = filters.detach().clone()
    optimizer.step()
    update = ((before * (8**0.5 / before.norm())) - filters.detach()).reshape(8, -1) / 1e-3
    singular = torch.linalg.svdvals(update)
    assert singular.min() > 0.5 and singular.max() < 1.5  # all directions move alike
    assert abs(filters.norm().item() - 8**0.5) < 0.05


def test_a_small_cnn_trained_with_optimizer_muon_lowers_its_loss():
    torch.manual_seed(0)
    images = torch.randn(64, 3, 8, 8)
    labels = images.mean((2, 3)).argmax(1)  # the brightest channel: learnable by the conv and the linear layer
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)
    )
    filters = model[0].weight.detach().clone()
    optimizer = instantiate(compose_train(["optimizer=muon", "optimizer.lr=0.1"]).optimizer)(model.parameters())
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
    assert not torch.equal(model[0].weight.detach(), filters)  # Muon moved the filters
    assert optimizer.state_dict()["param_groups"][1]["lr"] == 0.24  # a checkpoint keeps both groups


def test_bad_muon_settings_are_one_line_errors():
    message = config_error(["optimizer=muon", "optimizer.ns_steps=0"])
    assert message.startswith("optimizer.ns_steps=0 is invalid")
