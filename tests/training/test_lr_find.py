"""lr_find=true: the learning-rate range test through the real run, its picture, its suggestion."""

from __future__ import annotations

import json
import math

from PIL import Image

from tests.conftest import TINY, compose_train
from visionlab.experiment import run
from visionlab.training.lr_find import RangeRecord, RangeTest


def test_the_lr_rises_exponentially_from_min_to_max():
    record = RangeRecord(RangeTest(min_lr=1e-6, max_lr=1.0, steps=7))
    assert [round(math.log10(record.lr_at(i)), 9) for i in range(7)] == [-6, -5, -4, -3, -2, -1, 0]


def test_the_suggestion_is_a_tenth_of_the_lr_at_the_lowest_smoothed_loss():
    record = RangeRecord(RangeTest())
    record.lrs = [10.0 ** e for e in range(-7, 1)]
    record.smoothed = [3.0, 2.9, 2.8, 2.7, 2.5, 1.0, 0.8, 4.0]
    record.losses = list(record.smoothed)
    assert record.suggestion() == (1e-2, 1e-1)


def test_a_range_test_writes_its_curve_and_suggestion_and_no_model(tmp_path):
    overrides = [*TINY, "model=mlp", "lr_find=true", "lr_range.steps=40", "lr_range.max_lr=100", "dataset.train_size=2000"]
    found = run(compose_train(overrides), tmp_path)
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggested_lr"] == found["suggested_lr"] == saved["lowest_loss_lr"] / 10
    assert len(saved["lr"]) == len(saved["loss"]) == saved["steps"] <= 40
    assert saved["lr"] == sorted(saved["lr"]) and saved["lr"][0] == 1e-7
    assert saved["steps"] < 40 or max(saved["smoothed_loss"]) > 0, "ends at 40 steps, or earlier once the loss blows up"
    assert 1e-5 < saved["suggested_lr"] < 1.0, "an Adam MLP's good rates are in between"
    with Image.open(tmp_path / "lr_find.png") as picture:
        assert picture.width > 400 and picture.height > 300
    assert not any((tmp_path / name).exists() for name in ("last.pt", "best.pt", "metrics.json")), "nothing pretends to be a trained model"
