"""Every option of every config group composes with the real conf/ and builds its object; in every experiment,
every option of each group it changes passes vl-train's checks and comes with its own defaults."""

from __future__ import annotations

import functools

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tests.conftest import CONF_DIR, compose_train
from visionlab.config import build, check_arguments, validate
from visionlab.data import ImageDataset
from visionlab.data.folds import Holdout, KFold
from visionlab.data.splits import DeviceSplit
from visionlab.errors import UserError
from visionlab.features import Features
from visionlab.reporting.pictures import PictureList
from visionlab.training.settings import TrainerSettings

# experiment/ and hparams_search/ set other groups (global package, no node of their own): tests/test_menu.py
# and tests/selection/ cover them.
GROUPS = sorted(
    p.name for p in CONF_DIR.iterdir() if p.is_dir() and p.name not in ("hydra", "experiment", "hparams_search")
)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF_DIR / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))
# An experiment's own option of a group: conf/<group>/<experiment>/<the option it extends>.yaml.
OWN_OPTIONS = sorted(p for p in CONF_DIR.glob("*/*/*.yaml") if p.parent.name in EXPERIMENTS)


def tiny_split(n: int) -> DeviceSplit:
    images = torch.randint(0, 256, (n, 1, 28, 28), dtype=torch.uint8)
    return DeviceSplit(
        images, torch.arange(n) % 10, scale=torch.full((1, 1, 1, 1), 1 / 255), shift=torch.zeros(1, 1, 1, 1)
    )


def test_default_config_has_every_group_and_a_seed():
    cfg = compose_train()
    for group in ("dataset", "model", "loss", "optimizer", "scheduler", "trainer"):
        assert group in cfg, group
    assert cfg.seed == 0
    assert cfg.objective == "val/acc"
    assert cfg.dataset._target_.endswith("Synthetic")


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group, option):
    cfg = compose_train([f"{group}={option}"])
    node = cfg[group]
    if group == "model":
        model = instantiate(node, in_shape=(1, 28, 28), num_classes=10)
        if not any(p.requires_grad for p in model.parameters()):  # kNN: memorizes instead of learning
            model.fit(tiny_split(n=20))
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    elif group == "optimizer":
        optimizer = instantiate(node)([torch.nn.Parameter(torch.zeros(3))])
        assert isinstance(optimizer, torch.optim.Optimizer)
    elif group == "scheduler":
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
        schedule = instantiate(node)(optimizer, epochs=2, steps_per_epoch=5)
        assert schedule.interval in ("step", "epoch")
    elif group == "loss":
        loss = instantiate(node)(torch.randn(4, 10), torch.tensor([0, 1, 2, 3]))
        assert loss.ndim == 0 and torch.isfinite(loss)
    elif group == "dataset":
        assert isinstance(instantiate(node), ImageDataset)
    elif group == "split":
        assert isinstance(instantiate(node), (Holdout, KFold))
    elif group == "regularization":
        weight = torch.nn.Parameter(torch.ones(2, 3))  # a weight matrix: biases (1-d) are not penalized
        penalty = instantiate(node)([weight])()
        assert penalty.ndim == 0 and penalty >= 0 and (penalty > 0) == (option != "none")
    elif group == "features" and option == "network":  # a trained network is the one thing it cannot do without
        with pytest.raises(UserError, match=r"^features=network needs features.network.checkpoint=RUN_DIR"):
            build(cfg, "features")
    elif group == "features":
        features = instantiate(node)
        assert isinstance(features, Features) and (len(features.extractors) == 0) == (option == "none")
    elif group == "logging":
        assert isinstance(instantiate(node), PictureList)
    elif group == "trainer":
        assert isinstance(instantiate(node), TrainerSettings)
    elif group == "recipe":
        assert set(node) <= {
            "epochs",
            "epoch_budget",
            "lr",
            "label_smoothing",
            "patience",
            "min_delta",
            "restart_every_epochs",
        }, "a recipe holds defaults other groups read, nothing else"
    else:
        pytest.fail(f"conf/{group}/ is a new group: say here what instantiating its options must give")


def test_data_root_defaults_to_data_and_follows_vl_data_dir(monkeypatch):
    assert compose_train(["dataset=mnist"]).dataset.root == "data"
    monkeypatch.setenv("VL_DATA_DIR", "/somewhere/else")
    assert compose_train(["dataset=cifar10"]).dataset.root == "/somewhere/else"


@pytest.mark.parametrize(
    "choice",
    [
        *(f"experiment={path.stem}" for path in sorted((CONF_DIR / "experiment").glob("*.yaml"))),
        *(f"hparams_search={path.stem}" for path in sorted((CONF_DIR / "hparams_search").glob("*.yaml"))),
        "model=cnn",
    ],
)
def test_no_config_sets_hydra_mode_so_only_the_command_line_can(choice):
    """vl-train skips Hydra's extra compose for hydra.mode (patches.skip_hydra_mode_compose) on this ground."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert compose(config_name="train", overrides=[choice], return_hydra_config=True).hydra.mode is None


@functools.cache
def choices(experiment: str) -> dict[str, str]:
    """The option each group of experiment=`experiment` came from (Hydra's runtime choices)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
        return dict(cfg.hydra.runtime.choices)


@functools.cache
def option_alone(group: str, option: str, model: str) -> dict:
    """`group=option` resolved as it comes without an experiment, beside `model` (and so with its recipe, which
    some options read their defaults from)."""
    return resolved(compose_train([f"model={model}", f"{group}={option}"])[group])


def refusal(cfg: DictConfig) -> str | None:
    """The one line vl-train would refuse `cfg` with before it builds anything, or None: every value
    (config.validate), then every key of each group against what its target takes (config.build's first step;
    the model's as a partial, its shape comes with the data)."""
    try:
        validate(cfg)
        for group in GROUPS:
            if group in cfg:
                check_arguments(cfg[group], f"{group}.", group, partial=group == "model")
    except UserError as error:
        return str(error)
    return None


def resolved(node: DictConfig) -> dict:
    return OmegaConf.to_container(node, resolve=True)


# The groups whose keys an experiment sets for whichever option is chosen: its augmentation (every dataset has the
# same augment keys) and its training length and batches (conf/trainer/ has one option).
KEPT_BY_EXPERIMENTS = ("dataset", "trainer")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_any_option_of_a_group_swaps_into_an_experiment_with_its_own_defaults(experiment):
    """`experiment=cifar10_fast scheduler=piecewise` was refused (scheduler.pct_start is not an argument of
    piecewise): the experiment set onecycle's keys at its top level, where they outlived its choice of onecycle.
    An experiment's settings of a group are its own option of that group (optimizer=cifar10_fast/momentum), which
    the user's choice replaces whole. So every option of every group an experiment changes passes the checks
    vl-train runs before building anything, and comes as it comes without the experiment: none of the
    experiment's keys of that group stay, accepted or not (experiment=cifar10_mlp optimizer=sgd is sgd's lr)."""
    plain, chosen = compose_train(), choices(experiment)
    composed = compose_train([f"experiment={experiment}"])
    changed = [g for g in GROUPS if (g in composed) != (g in plain) or g in plain and composed[g] != plain[g]]
    assert {"dataset", "model"} <= set(changed), "every experiment names its data and its model"
    refused, kept = [], []
    for group in changed:
        for option in sorted(f.stem for f in (CONF_DIR / group).glob("*.yaml")):
            cfg = compose_train([f"experiment={experiment}", f"{group}={option}"])
            if (why := refusal(cfg)) is not None:
                refused.append(f"{group}={option}: {why}")
            model = option if group == "model" else chosen["model"]
            if group not in KEPT_BY_EXPERIMENTS and group in cfg:
                if resolved(cfg[group]) != (alone := option_alone(group, option, model)):
                    kept.append(f"{group}={option} is {resolved(cfg[group])}, not {alone}")
    assert not refused, f"experiment={experiment} with " + "; ".join(refused)
    assert not kept, f"experiment={experiment} kept its keys of a group the user chose: " + "; ".join(kept)


@pytest.mark.parametrize("path", OWN_OPTIONS, ids=lambda p: f"{p.parent.parent.name}={p.parent.name}/{p.stem}")
def test_an_experiments_own_option_is_the_option_it_is_named_after_chosen_by_that_experiment(path):
    """optimizer=cifar10_fast/momentum reads as "momentum, as cifar10_fast sets it" in the run's choices and
    TensorBoard's HParams: it must build what optimizer=momentum builds, and no option may outlive its experiment."""
    group, experiment, option = path.parent.parent.name, path.parent.name, path.stem
    own = compose_train([f"{group}={experiment}/{option}"])[group]
    assert own._target_ == compose_train([f"{group}={option}"])[group]._target_
    assert choices(experiment)[group] == f"{experiment}/{option}"


def test_the_cnn_recipe_fills_its_keys_and_the_command_line_wins():
    cfg = compose_train()
    assert (cfg.trainer.epochs, cfg.optimizer.lr, cfg.loss.label_smoothing) == ("auto", 0.01, 0.1)
    assert (cfg.trainer.epoch_budget.epochs, cfg.trainer.epoch_budget.min_steps) == (10, 400)
    assert (
        cfg.trainer.early_stopping.patience,
        cfg.trainer.early_stopping.min_delta,
        cfg.scheduler.restart_every_epochs,
    ) == (2, 0.005, 1)
    mlp = compose_train(["model=mlp"])
    assert (mlp.trainer.epochs, mlp.optimizer.lr, mlp.loss.label_smoothing) == ("auto", 0.003, 0.0)
    overridden = compose_train(["trainer.epochs=4", "optimizer.lr=0.001"])
    assert (overridden.trainer.epochs, overridden.optimizer.lr) == (4, 0.001)
    assert "label_smoothing" not in compose_train(["loss=hinge"]).loss
    assert compose_train(["optimizer=sgd"]).optimizer.lr == 0.01
    plain = compose_train(["recipe=none"])
    assert (plain.trainer.epochs, plain.optimizer.lr, plain.loss.label_smoothing) == (3, 0.003, 0.0)
    assert (plain.trainer.early_stopping.patience, plain.scheduler.restart_every_epochs) == (None, None)
    assert compose_train(["trainer.early_stopping.patience=null"]).trainer.early_stopping.patience is None


@pytest.mark.parametrize("path", sorted((CONF_DIR / "model").glob("*.yaml")), ids=lambda p: p.stem)
def test_a_model_config_sets_its_own_group_only(path):
    """Recipes that reach into other groups live in conf/recipe/
    (chosen with the model, visibly) or conf/experiment/."""
    assert "@package" not in path.read_text()
    assert set(compose_train([f"model={path.stem}", "recipe=none"])) == set(compose_train(["recipe=none"]))
