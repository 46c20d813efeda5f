"""Each learning-rate schedule's trajectory over a run, stepped the way the loop steps it."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import compose_train, config_error
from visionlab.optimization import cosine, current_lr, multistep, onecycle, piecewise, plateau, step

EPOCHS, STEPS = 6, 4


def optimizer(**kwargs) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], **{"lr": 1.0, **kwargs})


def lr_per_epoch(schedule, opt, val_losses=None) -> list[float]:
    """The lr in effect during each epoch, driving the schedule like `fit` does."""
    lrs = []
    for epoch in range(EPOCHS):
        lrs.append(current_lr(opt))
        for _ in range(STEPS):
            opt.step()
            schedule.after_step()
        schedule.after_epoch({"loss": val_losses[epoch] if val_losses else 1.0, "acc": 0.5})
    return lrs


def test_step_multiplies_by_gamma_every_step_size_epochs():
    opt = optimizer()
    schedule = step(opt, EPOCHS, STEPS, step_size=2, gamma=0.5)
    assert schedule.interval == "epoch"
    assert lr_per_epoch(schedule, opt) == pytest.approx([1, 1, 0.5, 0.5, 0.25, 0.25])


def test_multistep_drops_at_the_milestone_epochs():
    opt = optimizer()
    assert lr_per_epoch(multistep(opt, EPOCHS, STEPS, milestones=[1, 4], gamma=0.1), opt) == pytest.approx(
        [1, 0.1, 0.1, 0.1, 0.01, 0.01]
    )


def lr_per_step(schedule, opt) -> list[float]:
    lrs = []
    for _ in range(EPOCHS * STEPS):
        lrs.append(current_lr(opt))
        opt.step()
        schedule.after_step()
    return lrs


def test_cosine_restarts_every_cycle_with_the_first_one_shortened_by_the_warmup():
    opt = optimizer()
    lrs = lr_per_step(cosine(opt, EPOCHS, STEPS, warmup_epochs=0.5, restart_every_epochs=2), opt)
    plain = optimizer()
    once = lr_per_step(cosine(plain, 2, STEPS, warmup_epochs=0.5), plain)
    assert lrs[:8] == pytest.approx(once[:8]), "the first cycle is the plain schedule of a 2-epoch run, warmup included"
    assert lrs[:2] == pytest.approx([0.01, 0.505]) and lrs[2] == pytest.approx(1.0)
    for start in (8, 16):  # each later cycle: from the full lr down over 2 epochs, with no warmup
        assert lrs[start] == pytest.approx(1.0) and lrs[start : start + 8] == sorted(
            lrs[start : start + 8], reverse=True
        )
        assert lrs[start + 7] == pytest.approx((1 + math.cos(math.pi * 7 / 8)) / 2)


def test_onecycle_rises_to_the_optimizer_lr_then_anneals_far_below_it_per_step():
    opt = optimizer(momentum=0.9)
    schedule = onecycle(opt, EPOCHS, STEPS, pct_start=0.25)
    assert schedule.interval == "step"
    lrs = []
    for _ in range(EPOCHS * STEPS):
        lrs.append(current_lr(opt))
        opt.step()
        schedule.after_step()
    assert lrs[0] == pytest.approx(1 / 25)
    assert max(lrs) == pytest.approx(1.0) and lrs.index(max(lrs)) == pytest.approx(0.25 * EPOCHS * STEPS, abs=1)
    assert lrs[-1] < 1e-3


def test_piecewise_is_airbenchs_straight_lines_up_to_the_lr_then_down_per_step():
    opt = optimizer()
    schedule = piecewise(opt, epochs=10, steps_per_epoch=10)  # 100 steps: the peak at step 23
    assert schedule.interval == "step"
    lrs = []
    for _ in range(101):
        lrs.append(current_lr(opt))
        opt.step()
        schedule.after_step()
    assert lrs[0] == pytest.approx(0.2) and lrs[10] == pytest.approx(0.2 + 0.8 * 10 / 23)
    assert lrs[23] == pytest.approx(1.0) and max(lrs) == pytest.approx(1.0)
    assert lrs[50] == pytest.approx(1 - 0.93 * 27 / 77) and lrs[100] == pytest.approx(0.07)
    custom = optimizer(lr=0.5)
    piecewise(custom, epochs=1, steps_per_epoch=10, start=0.0, peak_at=0.5, end=0.0)
    assert current_lr(custom) == 0.0


def test_onecycle_leaves_plain_sgd_without_momentum():
    opt = optimizer()
    onecycle(opt, EPOCHS, STEPS)
    assert opt.param_groups[0]["momentum"] == 0


def test_plateau_cuts_the_lr_when_val_loss_stops_improving():
    opt = optimizer()
    schedule = plateau(opt, EPOCHS, STEPS, factor=0.1, patience=1)
    assert schedule.monitor == "loss"
    lrs = lr_per_epoch(schedule, opt, val_losses=[1.0, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert lrs == pytest.approx([1, 1, 1, 1, 0.1, 0.1])  # two epochs without improvement, then 10x lower


@pytest.mark.parametrize(
    "name", ["none", "cosine", "step", "multistep", "exponential", "onecycle", "piecewise", "plateau"]
)
@pytest.mark.parametrize("optimizer_name", ["sgd", "momentum", "adam", "adagrad", "rmsprop", "adamw", "muon"])
def test_every_schedule_works_with_every_optimizer(name, optimizer_name):
    cfg = compose_train([f"scheduler={name}", f"optimizer={optimizer_name}"])
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(3))])
    lrs = lr_per_epoch(instantiate(cfg.scheduler)(opt, epochs=EPOCHS, steps_per_epoch=STEPS), opt)
    assert all(0 <= lr <= cfg.optimizer.lr for lr in lrs)


@pytest.mark.parametrize(
    "override,accepted",
    [
        ("scheduler.step_size=0", "whole number of epochs of at least 1"),
        ("scheduler.gamma=1.5", "in (0, 1)"),
        ("scheduler.peak_at=1.0", "[0, 1)"),
    ],
)
def test_bad_schedule_values_are_user_errors(override, accepted):
    message = config_error(["scheduler=piecewise" if "peak_at" in override else "scheduler=step", override])
    assert message.startswith(f"{override} is invalid") and accepted in message
