"""Which pictures a run draws is the list in conf/logging/: the list and reporting/pictures/ agree, a line added
(by a config of one's own) draws its picture, a line removed draws nothing, logging=none draws nothing, and a
config stored before the list (a checkpoint's) still builds, resumes and evaluates."""

from __future__ import annotations

import logging
import os

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.conftest import CONF_DIR, REPO, TINY, compose_train, config_error, read_metrics, run_cli
from tests.reporting.test_visuals import Recorder, subject_of
from visionlab.config import build
from visionlab.data import make_splits
from visionlab.data.synthetic import Synthetic
from visionlab.errors import UserError
from visionlab.evaluation import evaluate_checkpoint
from visionlab.experiment import build_components, run
from visionlab.models.cnn import CNN
from visionlab.models.knn import KNN
from visionlab.models.mlp import MLP
from visionlab.reporting.pictures import PictureList, PictureLog, Subject
from visionlab.reporting.pictures.log import builtin_pictures, setting_names
from visionlab.reporting.visual_log import VisualSettings
from visionlab.training.loop import evaluate
from visionlab.trust import Allowlist, check_stored

DOTS = "tests.reporting.extra_picture.Dots"
# A `logging` node as every checkpoint stored before the list holds it.
STORED_BEFORE = {
    "_target_": "visionlab.reporting.visual_log.VisualSettings",
    "data_preview": True,
    "confusion_every_n_epochs": 1,
    "first_layer_every_n_epochs": 1,
    "mistakes_every_n_epochs": 1,
    "neighbours": True,
    "histograms_every_n_epochs": 0,
    "graph": False,
    "saliency": True,
    "embedding_points": 2000,
}


def listed(option: str = "default") -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "logging" / f"{option}.yaml"))["pictures"]


# ---- the list and the package agree ---------------------------------------------------------------------


def test_every_listed_picture_is_a_picture_of_the_package():
    builtin = builtin_pictures()
    for name, node in listed().items():
        assert node["_target_"] in builtin, f"conf/logging/default.yaml lists {name}: {node['_target_']}, not found"
        assert node["_target_"].rsplit(".", 2)[-2] == name, "a picture's line is named after its file"


def test_every_picture_of_the_package_is_listed_or_optional_on_purpose():
    targets = {node["_target_"] for node in listed().values()}
    missing = [target for target, kind in builtin_pictures().items() if target not in targets and not kind.optional]
    assert not missing, f"in reporting/pictures/ but not in conf/logging/default.yaml (or marked optional): {missing}"
    assert len(builtin_pictures()) == len({kind.__module__ for kind in builtin_pictures().values()}), (
        "one picture per file"
    )


def test_every_setting_in_conf_is_taken_by_a_listed_picture():
    node = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "logging" / "default.yaml"))
    settings = {key for key in node if not key.startswith("_") and key != "pictures"}
    taken = {name for kind, _ in PictureList(node["pictures"]).kinds.values() for name in setting_names(kind)}
    assert settings == taken


# ---- what a list draws ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def splits():
    raw = Synthetic(train_size=200, test_size=60).load()
    return make_splits(raw, torch.arange(160), torch.arange(160, 200), torch.device("cpu"))


def draw(pictures: PictureList, subject: Subject) -> Recorder:
    """Two epochs and the test pass, as a run calls the composite."""
    recorder = Recorder()
    log = PictureLog(pictures, recorder, subject)
    log.start()
    model = subject.model
    if hasattr(model, "fit"):
        model.fit(subject.splits.train)
    else:
        for epoch in (1, 2):
            log.end_epoch(epoch, epoch, evaluate(model, subject.splits.val, None, 64, watch=log.watch(epoch)))
    log.finish(2, evaluate(model, subject.splits.test, None, 64, watch=log.watch()))
    return recorder


def subjects(splits) -> list[Subject]:
    """A network, a kNN, and a network on feature vectors (as far as the pictures are told)."""
    on_features = subject_of(MLP((1, 28, 28), 10, hidden=[16]), splits)
    return [
        subject_of(CNN((1, 28, 28), 10, channels=[4]), splits),
        subject_of(KNN((1, 28, 28), 10, k=3), splits),
        Subject(on_features.model, splits, 2, on_features=True),
    ]


def test_logging_none_draws_nothing_at_all(splits):
    """Each listed picture's settings are off in conf/logging/none.yaml: a picture added to the list must be too."""
    pictures = build(compose_train(["logging=none"]), "logging")
    applied = set()
    for subject in subjects(splits):
        applied |= {type(p).__name__ for p in PictureLog(pictures, Recorder(), subject).pictures}
        recorder = draw(pictures, subject)
        assert (recorder.images, recorder.scalar_tags, recorder.histograms, recorder.graphs) == ({}, set(), set(), 0)
    assert applied == {kind.__name__ for kind, _ in pictures.kinds.values()}, "every picture was given its chance"


def test_a_line_removed_is_a_picture_gone_and_its_setting_is_left_alone(splits):
    pictures = build(compose_train(["~logging.pictures.confusion", "~logging.pictures.graph"]), "logging")
    assert "confusion" not in pictures.kinds and "graph" not in pictures.kinds
    recorder = draw(pictures, subjects(splits)[0])
    assert recorder.graphs == 0 and not any("confusion" in tag for tag in recorder.images)
    assert not any("per_class_acc" in tag for tag in recorder.scalar_tags)
    assert {"val/mistakes", "test/mistakes", "data/train_preview"} <= set(recorder.images)


def test_a_line_added_on_the_command_line_is_drawn_with_its_own_checked_setting(splits):
    overrides = ["logging=none", f"+logging.pictures.dots._target_={DOTS}", "+logging.pictures.dots.side=3"]
    pictures = build(compose_train(overrides), "logging")
    recorder = draw(pictures, subjects(splits)[0])
    assert recorder.images["extra/dots"].shape == (3, 3, 3)
    assert recorder.scalar_tags == {"extra/val_acc", "extra/test_acc"}
    assert config_error([*overrides[:2], "+logging.pictures.dots.side=0"]) == (
        "logging.pictures.dots.side=0 is invalid: use a whole number of at least 1"
    )


def test_what_is_not_a_picture_or_a_setting_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"^logging\.pictures\.x\._target_=os\.path is not a picture"):
        build(compose_train(["+logging.pictures.x._target_=os.path"]), "logging")
    with pytest.raises(UserError, match=r"^logging\.pictures\.x=3 is invalid: use a picture's class"):
        build(compose_train(["+logging.pictures.x=3"]), "logging")
    with pytest.raises(UserError, match=r"^logging\.graf is not a setting of any picture.*did you mean logging\.graph"):
        build(compose_train(["+logging.graf=false"]), "logging")


def test_pictures_apply_by_what_the_subject_says_not_by_the_models_type(splits, caplog):
    """A network told it votes loses the saliency picture; one told it searches neighbours gets the neighbours."""
    pictures = build(compose_train(), "logging")
    model = CNN((1, 28, 28), 10, channels=[4])
    knn = KNN((1, 28, 28), 10, k=1)
    knn.fit(splits.train)

    def applied(**told) -> set[str]:
        return {type(p).__name__ for p in PictureLog(pictures, Recorder(), Subject(model, splits, 2, **told)).pictures}

    plain = applied(on_features=False)
    assert {"Saliency", "Embedding", "Mistakes"} <= plain and not {"Neighbours", "FeaturePreview"} & plain
    assert "Saliency" not in applied(on_features=False, votes=True)
    assert "Neighbours" in applied(on_features=False, neighbours=knn.neighbours)
    with caplog.at_level(logging.INFO, logger="visionlab"):
        features = applied(on_features=True)
    assert features == {"FeaturePreview", "Graph", "Confusion", "Histograms"}
    assert (
        "pictures: the model sees feature vectors, so the data preview, saliency, mistakes, first-layer, embedding and "
        "neighbour pictures are off" in caplog.messages
    )


# ---- a real run of a list of one's own --------------------------------------------------------------------


def test_a_picture_listed_by_a_config_dir_of_ones_own_is_drawn_by_a_real_run(tmp_path):
    own = tmp_path / "my_configs" / "logging"
    own.mkdir(parents=True)
    (own / "with_dots.yaml").write_text(
        f"defaults:\n  - none\n  - _self_\n\npictures:\n  dots: {{_target_: {DOTS}, side: 5}}\n"
    )
    run_dir = tmp_path / "run"
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    args = [f"--config-dir={own.parent}", "logging=with_dots", *TINY, "model=linear", "trainer.epochs=1"]
    result = run_cli(args, run_dir, env={"PYTHONPATH": path})
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    assert events.Tags()["images"] == ["extra/dots"] and {"extra/val_acc", "extra/test_acc"} <= set(
        events.Tags()["scalars"]
    )
    (image,) = events.Images("extra/dots")
    assert (image.width, image.height) == (5, 5)


# ---- configs stored before the list ----------------------------------------------------------------------


def test_a_logging_node_stored_before_the_list_is_trusted_and_builds_the_pictures_of_then():
    config = OmegaConf.to_container(compose_train(), resolve=True)
    config["logging"] = dict(STORED_BEFORE)
    check_stored(config, "last.pt", Allowlist.for_command())
    components = build_components(OmegaConf.create(config))
    assert list(components.pictures.kinds) == list(listed()), "the pictures drawn then are today's list"
    assert components.pictures.kinds["graph"][1] == {"graph": False}
    assert isinstance(components.pictures, VisualSettings)
    config["logging"]["confusion_every_n_epochs"] = -1
    with pytest.raises(UserError, match=r"^logging\.confusion_every_n_epochs=-1 is invalid: use a whole number"):
        build_components(OmegaConf.create(config))


def test_a_checkpoint_stored_before_the_list_evaluates_and_resumes(tmp_path):
    run(compose_train([*TINY, "model=linear", "trainer.epochs=1", "logging=none"]), tmp_path)
    checkpoint = torch.load(tmp_path / "last.pt", weights_only=True)
    checkpoint["config"]["logging"] = {**STORED_BEFORE, "mistakes_every_n_epochs": 0}
    torch.save(checkpoint, tmp_path / "last.pt")
    completed = read_metrics(tmp_path)
    assert evaluate_checkpoint(tmp_path)["test/acc"] == completed["test/acc"]  # vl-eval rebuilds the stored config
    (tmp_path / "metrics.json").unlink()  # as if stopped after its last epoch: resume=... goes on to the test
    metrics = run(compose_train([*TINY, f"resume={tmp_path / 'last.pt'}"]), tmp_path)
    assert metrics["status"] == "completed" and metrics["test/acc"] == completed["test/acc"]
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0})
    events.Reload()
    # the stored settings, not today's conf/: no mistakes picture, but the saliency of the mistakes still found
    assert set(events.Tags()["images"]) == {"test/confusion_matrix", "test/saliency"}
