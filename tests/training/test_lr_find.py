"""lr_find=true: the learning-rate range test through the real run, its picture, its suggestion."""

from __future__ import annotations

import functools
import json
import math

import pytest
from PIL import Image

from tests.conftest import TINY, compose_train, run_cli
from visionlab.errors import UserError
from visionlab.experiment import run
from visionlab.optimization import constant, cosine, onecycle, step
from visionlab.training.lr_find import RangeRecord, RangeTest, suggestion, warms_up, zero_phase


def test_the_lr_rises_exponentially_from_min_to_max():
    record = RangeRecord(RangeTest(min_lr=1e-6, max_lr=1.0, steps=7))
    assert [round(math.log10(record.lr_at(i)), 9) for i in range(7)] == [-6, -5, -4, -3, -2, -1, 0]


def test_the_edge_is_the_lowest_point_of_the_curve_smoothed_without_lag():
    record = RangeRecord(RangeTest(smoothing=0.6))
    record.lrs = [10.0 ** (e / 2) for e in range(-8, 3)]
    record.losses = [2.3, 2.3, 2.2, 2.0, 1.6, 1.2, 1.0, 1.1, 1.5, 3.0, math.nan]
    curve = record.smoothed()
    assert len(curve) == 10, "up to the loss that is not finite"
    assert min(range(10), key=curve.__getitem__) == 6 and record.edge() == record.lrs[6]
    average, one_way = 0.0, []
    for count, value in enumerate(record.losses[:10], 1):
        average = 0.6 * average + 0.4 * value
        one_way.append(average / (1 - 0.6**count))
    assert min(range(10), key=one_way.__getitem__) == 7, "a running average alone puts the lowest point a step late"


def test_a_loss_not_finite_before_any_lr_acted_is_the_data_or_the_model_not_the_range():
    record = RangeRecord(RangeTest())
    record.lrs, record.losses = [1e-4], [math.nan]
    with pytest.raises(
        UserError, match=r"^lr_find: the loss was nan at the first step, before any learning rate had acted"
    ):
        record.edge()


def test_a_flat_curve_stays_flat():
    assert zero_phase([1.5] * 6, 0.9) == pytest.approx([1.5] * 6)


@pytest.mark.parametrize(
    ("scheduler", "warmup"),
    [
        (cosine, True),
        (onecycle, True),
        (constant, False),
        (functools.partial(cosine, warmup_epochs=0.0), False),
        (functools.partial(step, step_size=1, gamma=0.5), False),
    ],
)
def test_the_rule_asks_the_schedule_whether_it_warms_up(scheduler, warmup):
    factory = functools.partial(scheduler, warmup_epochs=0.2) if scheduler is cosine else scheduler
    assert warms_up(factory, epochs=2, steps_per_epoch=20) is warmup
    suggested, rule = suggestion(0.05, warmup)
    assert suggested == pytest.approx(0.05 if warmup else 0.005)
    assert ("warms up" if warmup else "/ 10") in rule


def test_a_range_test_writes_its_curve_and_suggestion_and_no_model(tmp_path):
    overrides = [
        *TINY,
        "model=mlp",
        "lr_find=true",
        "lr_range.steps=40",
        "lr_range.max_lr=100",
        "dataset.train_size=2000",
    ]
    found = run(compose_train(overrides), tmp_path)
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] == found["suggested_lr"] == saved["lowest_loss_lr"], (
        "the default cosine schedule warms up"
    )
    assert saved["rule"] == "the lowest smoothed loss's lr (the schedule warms up)"
    assert len(saved["lr"]) == len(saved["loss"]) == saved["steps"] <= 40
    assert saved["lr"] == sorted(saved["lr"]) and saved["lr"][0] == 1e-4
    last = saved["loss"][-1]
    assert saved["steps"] == 40 or not math.isfinite(last) or last > min(saved["smoothed_loss"]), (
        "ends at 40 steps, or earlier once the loss has risen"
    )
    assert 1e-5 < saved["suggested_lr"] < 1.0, "an Adam MLP's good rates are in between"
    with Image.open(tmp_path / "lr_find.png") as picture:
        assert picture.width > 400 and picture.height > 300
    assert not any((tmp_path / name).exists() for name in ("last.pt", "best.pt", "metrics.json")), (
        "nothing pretends to be a trained model"
    )


@pytest.mark.parametrize("low,high", [("1", "0.1"), ("0.01", "0.01")])
def test_a_range_that_does_not_rise_is_refused_before_any_data_loads(tmp_path, low, high):
    """Through the real vl-train: a dataset root that does not exist proves that no data was loaded first."""
    result = run_cli(
        [
            *TINY,
            "lr_find=true",
            f"lr_range.min_lr={low}",
            f"lr_range.max_lr={high}",
            "dataset=mnist",
            f"dataset.root={tmp_path / 'nowhere'}",
            "dataset.download=false",
        ],
        tmp_path / "run",
    )
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert (
        f"lr_range.min_lr={float(low):g} is not below lr_range.max_lr={float(high):g}" in line
        and "smaller min_lr" in line
    )
    assert "MNIST" not in line
