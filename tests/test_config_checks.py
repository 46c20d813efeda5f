"""Config checks from one place: each value against what its component declares, on the real composed config.

These are the values students mistype; tests/cli/test_errors.py runs a share of them, and the
ones only a component's constructor or first use can reject, through the real `vl-train`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pytest
from torch import nn

from tests.conftest import compose_train, config_error
from visionlab.checks import Each, Either, Maybe, Number, OneOf, Pattern, Switch, Whole, declared
from visionlab.config import validate

# (overrides, the words the one line must hold)
MISTYPED = [
    (["seed=abc"], "seed='abc' is invalid: use a whole number"),
    (["seed=1.5"], "seed=1.5 is invalid"),
    (["optimizer.lr=1e-3x"], "optimizer.lr='1e-3x' is invalid: use a number greater than 0, such as 0.001"),
    (
        ["optimizer.betas=[2,0.9]"],
        "optimizer.betas=[2, 0.9] is invalid: use a list of 2 numbers in [0, 1), such as [0.9, 0.999]",
    ),
    (["optimizer.betas=[0.9]"], "optimizer.betas=[0.9] is invalid: use a list of 2 numbers"),
    (["+optimizer.eps=0"], "optimizer.eps=0 is invalid: use a number greater than 0"),
    (["optimizer=rmsprop", "optimizer.alpha=1.5"], "optimizer.alpha=1.5 is invalid: use a number in [0, 1]"),
    (["optimizer=sgd", "optimizer.nesterov=yes"], "optimizer.nesterov='yes' is invalid: use true or false"),
    (["loss.label_smoothing=2"], "loss.label_smoothing=2 is invalid: use a number in [0, 1), such as 0.1"),
    (["loss=hinge", "loss.margin=one"], "loss.margin='one' is invalid"),
    (["trainer.epochs=-3"], "trainer.epochs=-3 is invalid: use a whole number of at least 1"),
    (
        ["trainer.batch_size=12.8"],
        "trainer.batch_size=12.8 is invalid: use a whole number of at least 1, or one of all",
    ),
    (["trainer.batch_size=al"], "trainer.batch_size='al' is invalid"),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0 is invalid"),
    (["trainer.threads=two"], "trainer.threads='two' is invalid: use a whole number of at least 1, or null"),
    (["trainer.on_hangup=ignore"], "trainer.on_hangup='ignore' is unknown: use one of continue, stop"),
    (["model.dropout=1.5"], "model.dropout=1.5 is invalid: use a number in [0, 1), such as 0.25"),
    (["model=mlp", "model.dropout=50"], "model.dropout=50 is invalid"),
    (["model=mlp", "model.dropout=-0.1"], "model.dropout=-0.1 is invalid"),
    (
        ["model=mlp", "model.hidden=[-5]"],
        "model.hidden=[-5] is invalid: use a list of whole numbers of at least 1, such as [128], or [] for none",
    ),
    (["model.hidden=[-5]"], "model.hidden=[-5] is invalid"),
    (["model=mlp", "model.hidden=512"], "model.hidden=512 is invalid: use a list"),
    (["model.kernel_size=0"], "model.kernel_size=0 is invalid: use a whole number of pixels of at least 1"),
    (["model.channels=[16,-32]"], "model.channels=[16, -32] is invalid"),
    (["model.pool=maxpool"], "model.pool='maxpool' is unknown: use one of max, avg, none"),
    (["model.batchnorm=yes"], "model.batchnorm='yes' is invalid: use true or false"),
    (["model.activation=ReLU"], "model.activation='ReLU' is unknown: use one of relu, leaky_relu"),
    (["model=resnet_small", "model.widths=[0]"], "model.widths=[0] is invalid"),
    (["model=knn", "model.k=[]"], "model.k=[] is invalid"),
    (["model=knn", "model.pca=0"], "model.pca=0 is invalid: use a whole number of dimensions of at least 1, or null"),
    (["dataset.noise=-1"], "dataset.noise=-1 is invalid: use a number of at least 0"),
    (["dataset.shape=[0,28,28]"], "dataset.shape=[0, 28, 28] is invalid: use a list of 3 whole numbers of at least 1"),
    (["dataset.shape=[28,28]"], "dataset.shape=[28, 28] is invalid"),
    (["dataset.num_classes=1"], "dataset.num_classes=1 is invalid: use a whole number from 2 to 10"),
    (["dataset.max_shift=-1"], "dataset.max_shift=-1 is invalid"),
    (["dataset.augment.flip=1"], "dataset.augment.flip=1 is invalid: use true or false"),
    (
        ["dataset=folder", "dataset.label_pattern='(\\d+'"],
        "dataset.label_pattern='(\\d+' is invalid (missing ), unterminated subpattern at position 0): use a regular",
    ),
    (["dataset=folder", "dataset.labels=''"], "dataset.labels='' is invalid: use a text, or null"),
    (["split.val_fraction=0"], "split.val_fraction=0 is invalid: use a number in (0, 1)"),
    (["split.val_fraction=10"], "split.val_fraction=10 is invalid"),
    (["split=kfold", "split.folds=1"], "split.folds=1 is invalid: use a whole number of at least 2"),
    (
        ["scheduler=step", "scheduler.step_size=1.5"],
        "scheduler.step_size=1.5 is invalid: use a whole number of epochs of at least 1",
    ),
    (["scheduler=onecycle", "scheduler.pct_start=30"], "scheduler.pct_start=30 is invalid: use a number in (0, 1)"),
    (
        ["scheduler=plateau", "scheduler.patience=-1"],
        "scheduler.patience=-1 is invalid: use a whole number of epochs of at least 0",
    ),
    (["scheduler=multistep", "scheduler.milestones=[2,x]"], "scheduler.milestones=[2, 'x'] is invalid"),
    (["scheduler=cosine", "scheduler.min_lr_ratio=2"], "scheduler.min_lr_ratio=2 is invalid: use a number in [0, 1]"),
    (["regularization=l1", "regularization.strength=1e-3x"], "regularization.strength='1e-3x' is invalid"),
    (
        ["features=color_hist", "model=linear", "features.color.bins=300"],
        "features.color.bins=300 is invalid: use a whole number from 1 to 256",
    ),
    (
        ["features=hog", "model=linear", "features.hog.cell_size=0"],
        "features.hog.cell_size=0 is invalid: use a whole number of pixels of at least 1, or one of auto",
    ),
    (
        ["logging.confusion_every_n_epochs=-1"],
        "logging.confusion_every_n_epochs=-1 is invalid: use a whole number of epochs of at least 0",
    ),
    (["logging.graph=maybe"], "logging.graph='maybe' is invalid: use true or false"),
    # moved here from tests/cli/test_errors.py, which runs a share of them through vl-train
    (["optimizer.lr=0"], "optimizer.lr=0 is invalid: use a number greater than 0"),
    (["optimizer.lr=-0.1"], "optimizer.lr=-0.1 is invalid: use a number greater than 0"),
    (["trainer.epochs=many"], "trainer.epochs='many' is invalid: use a whole number"),
    (["trainer.batch_size=0"], "trainer.batch_size=0 is invalid: use a whole number of at least 1"),
    (["trainer.eval_batch_size=-5"], "trainer.eval_batch_size=-5 is invalid"),
    (["trainer.threads=0"], "trainer.threads=0 is invalid"),
    (["trainer.grad_clip=-1"], "trainer.grad_clip=-1 is invalid: use a number greater than 0"),
    (["trainer.checkpoint_every_steps=0"], "trainer.checkpoint_every_steps=0 is invalid"),
    (["trainer.precision=16"], "trainer.precision=16 is unknown: use one of 32, bf16, fp16, auto"),
    (["trainer.compile=1"], "trainer.compile=1 is invalid: use true or false"),
    (["trainer.device=tpu"], "trainer.device='tpu'"),
    (["objective=val/f1"], "objective='val/f1'"),
    (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum=1.5 is invalid: use a number in [0, 1)"),
    (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1 is invalid"),
    (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0 is invalid"),
    (["model=knn", "model.k=0"], "model.k=0 is invalid"),
    (["model=knn", "model.distance=l3"], "model.distance='l3' is unknown"),
    (["objective=test/acc"], "objective='test/acc'"),
    (["dataset.train_size=0"], "dataset.train_size=0 is invalid"),
    (["split.val_fraction=1.5"], "split.val_fraction=1.5 is invalid"),
]


def test_the_catalogue_has_the_reported_values_and_twenty_more():
    assert len(MISTYPED) >= 45


@pytest.mark.parametrize("overrides,words", MISTYPED, ids=[" ".join(o) for o, _ in MISTYPED])
def test_a_mistyped_value_names_the_key_the_value_and_what_is_accepted(overrides, words):
    assert words in config_error(overrides)


def test_every_shipped_config_passes_its_checks():
    for overrides in (
        ["model=mlp"],
        ["model=knn"],
        ["model=lenet5"],
        ["model=resnet_small", "dataset=cifar10"],
        ["features=hog+color", "model=linear"],
        ["split=kfold"],
        ["scheduler=onecycle", "optimizer=momentum"],
    ):
        validate(compose_train(overrides))


class SquareNet(nn.Module):
    """A user's own model, declared as every shipped one is: nothing else knows its keys."""

    def __init__(
        self,
        in_shape: Sequence[int],
        num_classes: int,
        width: Annotated[int, Whole(1)] = 8,
        gate: Annotated[str, OneOf("on", "off")] = "on",
    ):
        super().__init__()


def test_a_new_component_is_checked_from_its_own_declarations():
    target = f"model._target_={__name__}.SquareNet"
    validate(compose_train(["model=linear", target, "+model.width=4"]))
    assert (
        config_error(["model=linear", target, "+model.width=0"])
        == "model.width=0 is invalid: use a whole number of at least 1"
    )
    assert "model.gate='half' is unknown: use one of on, off" in config_error(
        ["model=linear", target, "+model.gate=half"]
    )


def test_torch_classes_are_described_in_one_table():
    assert set(declared("torch.optim.Adam")) >= {"lr", "betas", "eps", "weight_decay"}
    assert declared(SquareNet).keys() == {"width", "gate"}


@pytest.mark.parametrize(
    "rule,good,bad,noun",
    [
        (Whole(1), [1, 7], [0, 1.5, True, "3", None], "a whole number of at least 1"),
        (Whole(1, 256), [1, 256], [0, 257], "a whole number from 1 to 256"),
        (Number(gt=0), [1e-9, 3], [0, -1, True, "x", float("nan")], "a number greater than 0"),
        (Number(ge=0, lt=1, example=0.5), [0, 0.99], [1, -0.1], "a number in [0, 1), such as 0.5"),
        (Switch(), [True, False], [1, "yes", None], "true or false"),
        (OneOf(32, "bf16"), [32, "32", "bf16"], [16, True, "BF16"], "one of 32, bf16"),
        (Each(Whole(1), length=2), [[1, 2]], [[1], [1, 0], "12", 12], "a list of 2 whole numbers of at least 1"),
        (Each(Whole(1), empty_ok=True), [[], [3]], [[0]], "a list of whole numbers of at least 1"),
        (Maybe(Whole(1)), [None, 3], [0], "a whole number of at least 1, or null"),
        (Either(Whole(1), OneOf("all")), [5, "all"], ["al", 0], "a whole number of at least 1, or one of all"),
        (
            Pattern("label", "'^(x)'"),
            [r"^(\d+)\.", r"(?P<label>[a-z]+)_\d"],
            [r"^\d+", "^(", "", 3, None],
            "a regular expression whose first group, or the group named label, is the label, such as '^(x)'",
        ),
    ],
)
def test_rules_accept_what_they_say(rule, good, bad, noun):
    assert all(rule.accepts(v) for v in good) and not any(rule.accepts(v) for v in bad)
    assert rule.noun() == noun
