"""The lookahead EMA (training/lookahead.py): the average it keeps, when the weights jump to it,
and its checkpoint state."""

from __future__ import annotations

import torch
from torch import nn

from visionlab.training.lookahead import Lookahead


def model_at(value: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.fill_(value)
    return model


def set_weights(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)


def test_the_share_kept_grows_as_the_cube_of_the_run_done():
    lookahead = Lookahead(model_at(0.0), total_steps=100)
    assert lookahead.decay(0) == 0 and lookahead.decay(50) == 0.95**5 * 0.125 and lookahead.decay(100) == 0.95**5


def test_every_fifth_step_the_average_moves_toward_the_weights_and_the_weights_jump_to_it():
    model = model_at(0.0)
    lookahead = Lookahead(model, total_steps=10)
    set_weights(model, 1.0)  # as if an optimizer had moved every weight from 0 to 1
    model[1].running_mean.fill_(2.0)  # and the batches BatchNorm's statistics
    for step in range(1, 5):
        lookahead.after_step(step)
    assert model[0].weight[0, 0].item() == 1.0  # not yet
    lookahead.after_step(5)
    kept = 0.95**5 * 0.5**3  # decay(5) of 10 steps
    torch.testing.assert_close(model[0].weight, torch.full((2, 2), 1 - kept))  # kept x 0 + (1 - kept) x 1
    torch.testing.assert_close(model[1].running_mean, torch.full((2,), 2 * (1 - kept)))
    torch.testing.assert_close(lookahead.average["0.weight"], model[0].weight)


def test_finish_sets_the_weights_to_the_average_and_integer_buffers_are_left_alone():
    model = model_at(0.5)
    lookahead = Lookahead(model, total_steps=4, every=2)
    set_weights(model, 3.0)
    model[1].num_batches_tracked.fill_(7)
    lookahead.finish()
    assert torch.equal(model[0].bias, torch.full((2,), 0.5)) and model[1].num_batches_tracked.item() == 7


def test_a_lookahead_restored_from_its_state_dict_goes_on_as_the_original():
    def run(stop_at: int | None) -> torch.Tensor:
        model = model_at(0.0)
        lookahead = Lookahead(model, total_steps=12, every=2)
        for step in range(1, 13):
            set_weights(model, model[0].weight[0, 0].item() + 1.0)
            lookahead.after_step(step)
            if step == stop_at:  # a checkpoint, then a fresh process: a new model and lookahead from it
                state, weights = lookahead.state_dict(), model.state_dict()
                model = model_at(0.0)
                model.load_state_dict(weights)
                lookahead = Lookahead(model, total_steps=12, every=2)
                lookahead.load_state_dict(state)
        lookahead.finish()
        return model[0].weight

    assert torch.equal(run(stop_at=7), run(stop_at=None))
