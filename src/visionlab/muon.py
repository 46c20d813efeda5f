"""`optimizer=muon`: Muon on the conv filters, SGD on every other weight, as one optimizer (airbench94_muon).

Muon (Keller Jordan, 2024) replaces a filter bank's momentum step by its nearest semi-orthogonal matrix:
the step's singular values all set to about 1 by a few Newton-Schulz iterations, so no direction of
the update dominates the others. Each step first rescales the filters to a fixed norm (sqrt of their
count), so the lr alone sets how far they turn; they take no weight decay, which the rescaling makes
moot. Everything that is not a conv filter (linear layers, BatchNorm shifts, biases) takes SGD with
momentum, exactly as torch.optim.SGD does.

torch.optim.Muon takes 2-D weights only and neither rescales nor keeps airbench's bf16 iteration, so it
is not used: this is airbench94_muon's update, with its constants. One optimizer with two parameter
groups, so a checkpoint, the schedule (each group's lr scaled alike) and the gradient scaler see one
object.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated

import torch
from torch.optim import Optimizer

from visionlab.checks import Number, Switch, Whole

NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)  # quintic coefficients with the steepest slope at zero


class Muon(Optimizer):
    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: Annotated[float, Number(gt=0, example=0.01)] = 0.01,
        momentum: Annotated[float, Number(ge=0, lt=1, example=0.9)] = 0.9,
        nesterov: Annotated[bool, Switch()] = False,
        weight_decay: Annotated[float, Number(ge=0, example=5e-4)] = 0.0,
        muon_lr: Annotated[float, Number(gt=0, example=0.24)] = 0.24,
        muon_momentum: Annotated[float, Number(ge=0, lt=1, example=0.6)] = 0.6,
        muon_nesterov: Annotated[bool, Switch()] = True,
        ns_steps: Annotated[int, Whole(1, unit="iterations")] = 3,
    ):
        params = list(params)
        filters = [p for p in params if p.ndim == 4]
        rest = [p for p in params if p.ndim != 4]
        groups = [
            {"params": rest, "muon": False},
            {"params": filters, "muon": True, "lr": muon_lr, "momentum": muon_momentum, "nesterov": muon_nesterov},
        ]
        defaults = {"lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay}
        super().__init__([g for g in groups if g["params"]], {**defaults, "ns_steps": ns_steps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    (muon_step if group["muon"] else sgd_step)(p, self.state[p], group)
        return loss


def sgd_step(p: torch.Tensor, state: dict, group: dict) -> None:
    """torch.optim.SGD's step without dampening: weight decay added to the gradient, then (Nesterov) momentum."""
    grad = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
    if group["momentum"]:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.clone()
        else:
            state["momentum_buffer"].mul_(group["momentum"]).add_(grad)
        buffer = state["momentum_buffer"]
        grad = grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
    p.add_(grad, alpha=-group["lr"])


def muon_step(p: torch.Tensor, state: dict, group: dict) -> None:
    """airbench94_muon's Muon step for one filter bank [out, in, k, k]."""
    buffer = state.setdefault("momentum_buffer", torch.zeros_like(p.grad))
    buffer.mul_(group["momentum"]).add_(p.grad)
    grad = p.grad.add(buffer, alpha=group["momentum"]) if group["nesterov"] else buffer
    p.mul_(len(p) ** 0.5 / p.norm())  # the filters back to norm sqrt(out)
    update = orthogonalized(grad.reshape(len(grad), -1), group["ns_steps"]).view(grad.shape)
    p.add_(update.to(p.dtype), alpha=-group["lr"])


def orthogonalized(g: torch.Tensor, steps: int, eps: float = 1e-7) -> torch.Tensor:
    """About U V^T of g = U S V^T, by `steps` quintic Newton-Schulz iterations in bfloat16 (airbench's): the
    singular values land roughly in (0.5, 1.5), which trains as well as exactly 1."""
    a, b, c = NEWTON_SCHULZ
    x = g.bfloat16()
    x = x / (x.norm() + eps)  # the largest singular value at most 1
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T  # the smaller Gram matrix
    for _ in range(steps):
        s = x @ x.T
        x = a * x + (b * s + c * s @ s) @ x
    return x.T if tall else x
