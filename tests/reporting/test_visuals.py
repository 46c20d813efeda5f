"""Pictures in TensorBoard: the tiling and counting they rest on, each switch, and the real command."""

from __future__ import annotations

import io

import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torchvision.utils import make_grid

from tests.conftest import TINY, compose_train, config_error, read_metrics, run_cli
from visionlab.config import build
from visionlab.data import DeviceSplit, make_splits
from visionlab.data.synthetic import SHAPES, Synthetic
from visionlab.models.cnn import CNN
from visionlab.models.knn import KNN
from visionlab.models.linear import Linear
from visionlab.models.mlp import MLP
from visionlab.reporting import visuals
from visionlab.reporting.pictures import PictureList, PictureLog, Subject
from visionlab.reporting.pictures.confusion import per_class_accuracy, tag_name
from visionlab.reporting.pictures.first_layer import first_layer
from visionlab.reporting.pictures.mistake_finder import MistakeFinder
from visionlab.reporting.pictures.picture import is_due
from visionlab.reporting.summary import RunSummary, best_epoch
from visionlab.reporting.visuals import floor_percent
from visionlab.training.loop import evaluate

# ---- tiling and scaling -----------------------------------------------------------------------------


@pytest.mark.parametrize("n,nrow,padding", [(10, 4, 2), (7, 7, 1), (5, 8, 2), (16, 4, 1)])
@pytest.mark.parametrize("channels", [3, 1])
def test_grid_and_tile_origins_match_make_grid(n, nrow, padding, channels):
    tiles = torch.rand(n, channels, 5, 7)
    grid = make_grid(tiles, nrow=nrow, padding=padding, pad_value=1.0)
    assert torch.equal(visuals.grid(tiles, nrow, padding, 1.0), grid)
    for tile, (top, left) in zip(tiles, visuals.tile_origins(n, nrow, 5, 7, padding).tolist()):
        assert torch.equal(grid[:, top : top + 5, left : left + 7], tile.expand(3, -1, -1))


def test_rescaled_stretches_each_tile_on_its_own():
    tiles = torch.stack(
        [torch.linspace(-3, 1, 12).view(3, 2, 2), torch.linspace(10, 11, 12).view(3, 2, 2), torch.full((3, 2, 2), 4.0)]
    )
    out = visuals.rescaled(tiles)
    assert torch.allclose(out[:2].amin(dim=(1, 2, 3)), torch.zeros(2)) and torch.allclose(
        out[:2].amax(dim=(1, 2, 3)), torch.ones(2)
    )
    assert torch.equal(out[2], torch.zeros(3, 2, 2)), "a constant tile is flat, not NaN"


@pytest.mark.parametrize(
    "weight_shape,image_shape,tiles_shape",
    [
        ((10, 784), (1, 28, 28), (10, 1, 28, 28)),
        ((10, 3072), (3, 32, 32), (10, 3, 32, 32)),
        ((16, 3, 5, 5), (3, 5, 5), (16, 3, 5, 5)),
        ((4, 2, 3, 3), (2, 3, 3), (8, 1, 3, 3)),
    ],
)
def test_weights_become_one_tile_per_unit_or_per_channel(weight_shape, image_shape, tiles_shape):
    assert visuals.as_tiles(torch.randn(weight_shape), image_shape).shape == tiles_shape


def test_linear_templates_are_the_weight_rows_as_images():
    weight = torch.arange(2 * 4, dtype=torch.float32).view(2, 4)
    tiles = visuals.as_tiles(weight, (1, 2, 2))
    assert torch.allclose(tiles[0, 0], torch.tensor([[0, 1], [2, 3]]) / 3)


def test_first_per_class_leaves_gaps_for_short_classes():
    labels = torch.tensor([2, 0, 2, 2, 0, 2])
    assert visuals.first_per_class(labels, 3, 2).tolist() == [[1, 4], [-1, -1], [0, 2]]


def test_a_picture_is_an_rgb_uint8_image_with_room_for_its_words():
    plain = visuals.picture(torch.rand(6, 1, 28, 28), 3)
    labelled = visuals.picture(torch.rand(6, 1, 28, 28), 3, title="t", row_labels=["a", "b"], captions=["x"] * 6)
    assert plain.dtype == torch.uint8 and plain.shape[0] == 3 and labelled.shape[0] == 3
    assert labelled.shape[1] > plain.shape[1] and labelled.shape[2] > plain.shape[2]


def test_a_picture_without_words_is_the_grid_zoomed_by_whole_pixels():
    tiles = torch.rand(5, 3, 28, 28)
    expected = visuals.grid(tiles, 3, visuals.PAD, 1.0).mul(255).round().to(torch.uint8)
    zoom = visuals.TILE_PX // 28
    assert torch.equal(visuals.picture(tiles, 3), expected.repeat_interleave(zoom, 1).repeat_interleave(zoom, 2))


def test_blues_is_matplotlibs_blues_colormap():
    from matplotlib import colormaps

    values = torch.linspace(0, 1, 101)
    expected = torch.from_numpy(colormaps["Blues"](values.numpy())[:, :3] * 255)
    assert (visuals.blues(values).double() - expected).abs().max() <= 2, "matplotlib's 256-colour table rounds a little"


def test_confusion_cells_are_coloured_by_their_rows_share_not_their_count():
    image = visuals.confusion_picture(torch.tensor([[8, 2], [0, 50]]), ["a", "b"], "t")
    pixels = image.permute(1, 2, 0).reshape(-1, 3)
    cell = max(visuals.MIN_CELL_PX, visuals.MATRIX_PX // 2)

    def area(share: float) -> int:
        return int((pixels == visuals.blues(torch.tensor(share))).all(1).sum())

    assert area(0.0) == cell * cell, "no count, no number: the whole cell is the lightest blue"
    for share in (0.8, 0.2, 1.0):  # 8 of 10, 2 of 10, 50 of 50: the number written in takes a few pixels
        assert 0.9 * cell * cell < area(share) < cell * cell, share


# ---- counting -----------------------------------------------------------------------------------------


class Says(nn.Module):
    """Predicts the class written in each image's first pixel."""

    def forward(self, x):
        return nn.functional.one_hot(x.flatten(1)[:, 0].long(), 3).float() * 5


def said(predicted: list[int], true: list[int]) -> DeviceSplit:
    images = torch.tensor(predicted, dtype=torch.uint8).view(-1, 1, 1, 1)
    return DeviceSplit(images, torch.tensor(true), torch.ones(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))


def test_evaluate_counts_the_confusion_matrix_across_batches():
    split = said(predicted=[0, 1, 2, 2, 0, 1, 1], true=[0, 1, 2, 0, 0, 2, 1])
    result = evaluate(Says(), split, None, batch_size=3)
    assert result["confusion"].tolist() == [[2, 0, 1], [0, 2, 0], [0, 1, 1]]  # [true, predicted]
    assert result["acc"] == pytest.approx(5 / 7) and result["loss"] is None
    assert per_class_accuracy(result["confusion"]) == pytest.approx([2 / 3, 1.0, 0.5])


def test_per_class_accuracy_is_none_for_a_class_the_split_lacks():
    assert per_class_accuracy(torch.tensor([[3, 1], [0, 0]])) == [0.75, None]


def test_mistake_finder_keeps_the_most_confident_wrong_answers_across_batches():
    split = said(predicted=[0, 1, 2, 2, 0, 1, 1], true=[0, 1, 2, 0, 0, 2, 1])  # wrong: images 3 and 5
    finder = MistakeFinder(k=4, votes=False, device=torch.device("cpu"))
    evaluate(Says(), split, None, batch_size=2, watch=finder)
    index, predicted, confidence = finder.mistakes()
    assert index.tolist() == [3, 5] and predicted.tolist() == [2, 1]
    assert torch.allclose(confidence, torch.softmax(torch.tensor([5.0, 0, 0]), 0)[0].expand(2))


def test_mistake_finder_ranks_by_confidence_and_reads_votes_as_they_are():
    finder = MistakeFinder(k=2, votes=True, device=torch.device("cpu"))
    finder(torch.tensor([[0.6, 0.4], [0.2, 0.8]]), torch.tensor([1, 0]))
    finder(torch.tensor([[0.1, 0.9], [1.0, 0.0]]), torch.tensor([0, 0]))
    index, predicted, confidence = finder.mistakes()
    assert (
        index.tolist() == [2, 1] and predicted.tolist() == [1, 1] and confidence.tolist() == pytest.approx([0.9, 0.8])
    )


def test_due_every_n_epochs_and_at_the_last():
    assert [e for e in range(1, 6) if is_due(2, e, 5)] == [2, 4, 5]
    assert not any(is_due(0, e, 5) for e in range(1, 6))


def test_first_layer_tells_templates_from_filters():
    layer, only = first_layer(Linear((1, 4, 4), 3))
    assert isinstance(layer, nn.Linear) and only, "a linear classifier's only layer: class templates"
    layer, only = first_layer(MLP((1, 4, 4), 3, hidden=[5]))
    assert layer.out_features == 5 and not only
    layer, only = first_layer(CNN((1, 8, 8), 3, channels=[4], hidden=[]))
    assert isinstance(layer, nn.Conv2d) and layer.out_channels == 4 and not only
    assert first_layer(KNN((1, 4, 4), 3)) is None


def test_confidence_is_rounded_down_never_up_to_certainty():
    assert [floor_percent(x) for x in (0.9996, 0.5, 1.0, 0.123)] == ["99.9%", "50%", "100%", "12.3%"]


def test_class_names_become_tag_components():
    assert tag_name("0 - zero") == "0_-_zero" and tag_name("a/b c") == "a_b_c"


def test_the_logging_group_builds_the_listed_pictures_and_rejects_bad_values():
    listed = build(compose_train(), "logging")
    assert list(listed.kinds) == [
        "data_preview",
        "feature_preview",
        "graph",
        "confusion",
        "saliency",
        "mistakes",
        "first_layer",
        "histograms",
        "embedding",
        "neighbours",
    ], "every picture, in the order they were drawn before they were listed"
    assert listed.kinds["confusion"][1] == {"confusion_every_n_epochs": 1}
    assert config_error(["logging.confusion_every_n_epochs=-1"]).startswith(
        "logging.confusion_every_n_epochs=-1 is invalid"
    )


@pytest.mark.parametrize(
    "override",
    ["logging.graph=yes", "logging.first_layer_every_n_epochs=1.5", "logging.histograms_every_n_epochs=true"],
)
def test_settings_reject_bad_values(override):
    assert config_error([override]).startswith(override.split("=")[0] + "=")


# ---- each switch, in process ---------------------------------------------------------------------------


class Recorder:
    """Stands in for the Reporter: remembers which tags were written."""

    def __init__(self):
        self.images, self.scalar_tags, self.histograms, self.graphs = {}, set(), set(), 0

    def image(self, tag, image, step):
        assert image.dtype == torch.uint8 and image.shape[0] == 3
        self.images[tag] = image

    def scalars(self, scalars, step):
        self.scalar_tags |= {tag for tag, value in scalars.items() if value is not None}

    def histogram(self, tag, values, step):
        self.histograms.add(tag)

    def graph(self, model, example):
        self.graphs += 1

    def embedding(self, features, split, classes, step):
        self.images["projector"] = features


@pytest.fixture
def no_drawing(monkeypatch):
    """The switches are under test here, not the drawing (the real command below draws everything)."""
    blank = torch.zeros(3, 1, 1, dtype=torch.uint8)
    monkeypatch.setattr(visuals, "picture", lambda *args, **kwargs: blank)
    monkeypatch.setattr(visuals, "confusion_picture", lambda *args, **kwargs: blank)


@pytest.fixture(scope="module")
def splits():
    raw = Synthetic(train_size=300, test_size=100).load()
    return make_splits(raw, torch.arange(250), torch.arange(250, 300), torch.device("cpu"))


LISTED = OmegaConf.to_container(compose_train().logging.pictures)  # conf/logging/default.yaml's pictures


def subject_of(model, splits, epochs: int = 2) -> Subject:
    """The pictures' subject as experiment.py describes it: a model with a neighbour search (kNN) votes."""
    knn = isinstance(model, KNN)
    return Subject(
        model,
        splits,
        epochs,
        on_features=False,
        votes=knn,
        neighbours=model.neighbours if knn else None,
        voters=(lambda: model.k) if knn else None,
    )


def picture_a_run(splits, model, **switches) -> Recorder:
    """What PictureLog writes for two epochs (one backward pass each, so gradients exist) and the test pass."""
    recorder = Recorder()
    log = PictureLog(PictureList(LISTED, **switches), recorder, subject_of(model, splits))
    log.start()
    if hasattr(model, "fit"):
        model.fit(splits.train)
    else:
        for epoch in (1, 2):
            images, labels = splits.train.batch(torch.arange(32))
            model.train()
            nn.functional.cross_entropy(model(images), labels).backward()
            log.end_epoch(epoch, epoch, evaluate(model, splits.val, None, 64, watch=log.watch(epoch)))
    log.finish(2, evaluate(model, splits.test, None, 64, watch=log.watch()))
    return recorder


MODELS = {
    "linear": lambda: Linear((1, 28, 28), 10),
    "mlp": lambda: MLP((1, 28, 28), 10, hidden=[80]),
    "cnn": lambda: CNN((1, 28, 28), 10, channels=[6]),
    "knn": lambda: KNN((1, 28, 28), 10, k=3),
}
EVERY_PICTURE = {
    "linear": {
        "data/train_preview",
        "val/confusion_matrix",
        "test/confusion_matrix",
        "val/mistakes",
        "test/mistakes",
        "first_layer/class_templates",
        "test/saliency",
    },  # no projector: a linear classifier has no layer before its last
    "mlp": {
        "data/train_preview",
        "val/confusion_matrix",
        "test/confusion_matrix",
        "val/mistakes",
        "test/mistakes",
        "first_layer/templates",
        "test/saliency",
        "projector",
    },
    "cnn": {
        "data/train_preview",
        "val/confusion_matrix",
        "test/confusion_matrix",
        "val/mistakes",
        "test/mistakes",
        "first_layer/filters",
        "test/saliency",
        "projector",
    },
    "knn": {"data/train_preview", "test/confusion_matrix", "test/mistakes", "test/neighbours"},
}
SWITCHED_OFF = {
    "data_preview": (False, {"data/train_preview"}),
    "confusion_every_n_epochs": (0, {"val/confusion_matrix", "test/confusion_matrix"}),
    "mistakes_every_n_epochs": (0, {"val/mistakes", "test/mistakes"}),
    "first_layer_every_n_epochs": (0, {"first_layer/class_templates", "first_layer/templates", "first_layer/filters"}),
    "neighbours": (False, {"test/neighbours"}),
    "saliency": (False, {"test/saliency"}),
    "embedding_points": (0, {"projector"}),
}


@pytest.mark.parametrize("name", MODELS)
def test_each_model_gets_its_pictures(splits, no_drawing, name):
    recorder = picture_a_run(splits, MODELS[name](), histograms_every_n_epochs=1)
    assert set(recorder.images) == EVERY_PICTURE[name]
    assert {f"test/per_class_acc/{name}" for name in SHAPES} <= recorder.scalar_tags
    if name == "knn":
        assert recorder.histograms == set()
    else:
        assert {f"val/per_class_acc/{name}" for name in SHAPES} <= recorder.scalar_tags
        assert "grad_norm" in recorder.scalar_tags
        assert {f"params/{n}" for n, _ in MODELS[name]().named_parameters()} | {
            f"grads/{n}" for n, _ in MODELS[name]().named_parameters()
        } == recorder.histograms


@pytest.mark.parametrize("switch", SWITCHED_OFF)
@pytest.mark.parametrize("name", ["cnn", "knn"])
def test_switching_a_picture_off_removes_its_tag(splits, no_drawing, name, switch):
    value, removed = SWITCHED_OFF[switch]
    recorder = picture_a_run(splits, MODELS[name](), **{switch: value})
    assert set(recorder.images) == EVERY_PICTURE[name] - removed
    if switch == "confusion_every_n_epochs":
        assert not any("per_class_acc" in tag for tag in recorder.scalar_tags)


def test_histograms_and_graph_are_switches_too(splits, no_drawing):
    recorder = picture_a_run(splits, MODELS["cnn"](), graph=False)
    assert recorder.graphs == 0 and recorder.histograms == set() and "grad_norm" not in recorder.scalar_tags
    assert picture_a_run(splits, MODELS["cnn"](), data_preview=False).graphs == 1


# ---- the summary -----------------------------------------------------------------------------------------


def test_best_epoch_is_the_earliest_of_the_best():
    assert best_epoch({1: 0.5, 2: 0.7, 3: 0.7}) == (2, 0.7)
    assert best_epoch({}) is None


def test_summary_markdown_has_the_command_the_best_epoch_and_the_tags(tmp_path):
    metrics = {
        "val/acc": 0.6,
        "test/acc": 0.55,
        "test/loss": None,
        "epochs": 3,
        "steps": 30,
        "seconds": 4.2,
        "device": "cpu",
        "status": "completed",
    }
    text = RunSummary(
        "vl-train model=cnn", metrics, {1: 0.5, 2: 0.7, 3: 0.6}, ["val/confusion_matrix"], tmp_path
    ).markdown()
    assert "vl-train model=cnn" in text and "completed after 3 epochs (30 steps) in 4.2 s on cpu" in text
    assert "best epoch by val/acc: 2 of 3 (val/acc 0.7000)" in text and "from epoch 3" in text
    one = RunSummary("vl-train", {**metrics, "epochs": 1, "steps": 1}, {1: 0.5}, [], tmp_path).markdown()
    assert "completed after 1 epoch (1 step) in" in one
    assert "| test/loss | n/a |" in text and "- `val/confusion_matrix`" in text


# ---- the real command ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`vl-train model=<name>` on TINY plus overrides, each run once per module; -> (run_dir, stdout)."""
    done = {}

    def run(name: str, *overrides: str):
        if (name, overrides) not in done:
            run_dir = tmp_path_factory.mktemp(name) / "run"
            result = run_cli([f"model={name}", *TINY, *overrides], run_dir)
            assert result.returncode == 0, result.stderr
            done[name, overrides] = run_dir, result.stdout
        return done[name, overrides]

    return run


HISTOGRAMS = "logging.histograms_every_n_epochs=1"


def events_of(run_dir) -> EventAccumulator:
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0, "scalars": 0, "histograms": 0})
    events.Reload()
    return events


def decoded(event) -> Image.Image:
    image = Image.open(io.BytesIO(event.encoded_image_string))
    assert image.mode == "RGB" and image.size == (event.width, event.height)
    return image


@pytest.mark.parametrize("name", ["linear", "mlp", "cnn", "knn"])
def test_a_tiny_run_writes_every_picture_and_the_summary(tiny_run, name):
    run_dir, stdout = tiny_run(name, HISTOGRAMS)
    events = events_of(run_dir)
    images = {tag: events.Images(tag) for tag in events.Tags()["images"]}
    # the projector's files are not images: tests/cli/test_inside_run.py
    assert set(images) == EVERY_PICTURE[name] - {"projector"}
    for tag, written in images.items():
        per_run = 2 if tag.startswith(("val/", "first_layer/")) else 1  # after each epoch (TINY has 2), or once
        assert len(written) == per_run, tag
        width, height = decoded(written[-1]).size
        # the smallest: one row of 84-pixel class templates, titled and labelled
        assert width >= 200 and height >= 120, tag
    preview = decoded(images["data/train_preview"][0])
    assert preview.height > preview.width, "ten rows (classes) of eight images"
    if name == "linear":
        templates = decoded(images["first_layer/class_templates"][-1])
        assert templates.width > 3 * templates.height, "one row of ten class templates"
    scalars = set(events.Tags()["scalars"])
    assert {f"test/per_class_acc/{name}" for name in SHAPES} <= scalars
    assert len(events.Scalars("test/per_class_acc/horizontal_bar")) == 1
    if name != "knn":
        assert len(events.Scalars("val/per_class_acc/horizontal_bar")) == 2 and len(events.Scalars("grad_norm")) == 2
        assert {"params/" + n for n, _ in MODELS[name]().named_parameters()} <= set(events.Tags()["histograms"])
    assert events.Tags()["graph"] is (name != "knn")
    summary = (run_dir / "summary.md").read_text()
    assert f"vl-train model={name} dataset.train_size=600" in summary and "- `test/confusion_matrix`" in summary
    assert "summary.md" in stdout and "test/acc" in stdout


def test_pictures_off_change_nothing_but_the_pictures(tiny_run):
    on_dir, _ = tiny_run("cnn", HISTOGRAMS)
    off_dir, _ = tiny_run("cnn", "logging=none")  # every switch off (conf/logging/none.yaml)
    on, off = read_metrics(on_dir), read_metrics(off_dir)
    on.pop("seconds"), off.pop("seconds")
    assert on == off, "drawing never touches the training's randomness or the model"
    events = events_of(off_dir)
    assert events.Tags()["images"] == [] and events.Tags()["histograms"] == [] and not events.Tags()["graph"]
    assert not any("per_class_acc" in tag for tag in events.Tags()["scalars"])
    assert "Pictures in TensorBoard" not in (off_dir / "summary.md").read_text()
