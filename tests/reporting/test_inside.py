"""Seeing inside the network: the layer table, saliency and Grad-CAM, and the projector's embedding.

Each is checked against an independent reference: torch's FlopCounterMode and the layers' own
arithmetic for the table, captum for the maps, the model's own layers for the embedding, and a
CNN trained on real MNIST for where the saliency lies.
"""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format
from PIL import Image
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from torch.utils.tensorboard import SummaryWriter

from visionlab.data import make_splits
from visionlab.data.mnist import MNIST
from visionlab.data.synthetic import SHAPES, Synthetic
from visionlab.models.cnn import CNN
from visionlab.models.knn import KNN
from visionlab.models.linear import Linear
from visionlab.models.mlp import MLP
from visionlab.models.resnet import ResNet
from visionlab.reporting import embeddings, saliency, visuals
from visionlab.reporting.layer_summary import OUTSIDE, layer_table, report_layers
from visionlab.reporting.pictures.mistake_finder import MistakeFinder
from visionlab.reporting.summary import RunSummary
from visionlab.training.loop import all_of, evaluate

MODELS = {
    "linear": lambda: Linear((1, 28, 28), 10),
    "mlp": lambda: MLP((1, 28, 28), 10, hidden=[64, 32], batchnorm=True, dropout=0.1),
    "cnn": lambda: CNN((1, 28, 28), 10),
    "lenet5": lambda: CNN(
        (1, 28, 28), 10, channels=[6, 16], kernel_size=5, batchnorm=False, hidden=[120, 84], dropout=0.0
    ),
    "resnet_small": lambda: ResNet((3, 32, 32), 10),
}


def in_shape_of(name: str) -> tuple[int, int, int]:
    return (3, 32, 32) if name == "resnet_small" else (1, 28, 28)


# ---- the layer table ------------------------------------------------------------------------------------


def own_arithmetic(module: nn.Module, output_shape: tuple[int, ...]) -> int:
    """FLOPs of one image through a Conv2d or Linear, from its sizes: 2 per multiply-add."""
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0] * module.kernel_size[1]
        return 2 * module.in_channels // module.groups * k * math.prod(output_shape)
    if isinstance(module, nn.Linear):
        return 2 * module.in_features * module.out_features
    return 0


@pytest.mark.parametrize("name", MODELS)
def test_the_layer_table_adds_up_to_the_models_parameters_and_flop_counters_total(name):
    model = MODELS[name]().train()
    before = copy.deepcopy(model.state_dict())
    table = layer_table(model, in_shape_of(name))
    assert sum(layer.params for layer in table.layers) == table.params == sum(p.numel() for p in model.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:  # a batch of 3: per image is the total / 3
        model.eval()(torch.randn(3, *in_shape_of(name)))
    assert sum(layer.flops for layer in table.layers) == table.flops == counter.get_total_flops() // 3
    assert all(layer.name != OUTSIDE for layer in table.layers), (
        "every parameter and FLOP of these models is in a layer"
    )
    modules = dict(model.named_modules())
    for layer in table.layers:
        assert layer.flops == own_arithmetic(modules[layer.name], layer.shape), layer.name
        assert layer.params == sum(p.numel() for p in modules[layer.name].parameters())
    assert table.layers[-1].shape == (10,), "the last layer gives the class scores"
    model.train()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), (
        "measuring changes no weight nor BatchNorm statistic"
    )


def test_the_output_shapes_are_what_the_layers_give():
    model = CNN((3, 32, 32), 5, channels=[4, 8], hidden=[])
    shapes = {layer.name: layer.shape for layer in layer_table(model, (3, 32, 32)).layers}
    x = torch.zeros(1, 3, 32, 32)
    for index, module in enumerate(model.features):
        x = module(x)
        assert shapes[f"features.{index}"] == tuple(x.shape[1:])
    assert shapes["features.0"] == (4, 32, 32) and shapes["features.6"] == (8, 8, 8)


class Custom(nn.Module):
    """A parameter of its own and a matrix product in forward(), outside any leaf module."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.weight = nn.Parameter(torch.randn(5, 2 * 26 * 26))

    def forward(self, x):
        return F.linear(self.conv(x).flatten(1), self.weight)


def test_what_no_layer_holds_is_one_row_so_the_rows_still_add_up():
    table = layer_table(Custom(), (1, 28, 28))
    conv, outside = table.layers
    assert (conv.name, conv.shape, conv.params, conv.flops) == ("conv", (2, 26, 26), 20, 2 * 9 * 2 * 26 * 26)
    assert (outside.name, outside.params, outside.flops) == (OUTSIDE, 5 * 1352, 2 * 1352 * 5)
    assert table.params == 20 + 5 * 1352 and table.flops == conv.flops + outside.flops


def test_knn_has_no_layers_and_says_so():
    table = layer_table(KNN((1, 28, 28), 10), (1, 28, 28))
    assert table.layers == [] and table.params == 0
    assert "KNN: no layers" in table.text() and "| layer |" not in table.markdown() and "no layers" in table.markdown()


def test_the_table_reads_in_the_log_and_in_summary_md(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="visionlab"):
        table = report_layers(CNN((1, 28, 28), 10), (1, 28, 28), tmp_path, "vl-train model=cnn")
    logged = caplog.text
    assert "CNN on 1x28x28 images: 17 layers, 98,554 parameters, 3,988,480 FLOPs per image" in logged
    assert "features.0    Conv2d       16x28x28             144          225,792" in logged  # aligned columns
    early = (tmp_path / "summary.md").read_text()
    assert "vl-train model=cnn" in early and "| `features.0` | Conv2d | 16x28x28 | 144 | 225,792 |" in early
    assert "| **total** |  |  | **98,554** | **3,988,480** |" in early
    metrics = {"val/acc": 0.9, "epochs": 1, "steps": 3, "seconds": 1.0, "device": "cpu", "status": "completed"}
    final = RunSummary("vl-train", metrics, {1: 0.9}, [], tmp_path, layers=table.markdown()).markdown()
    assert (
        final.index("## Final metrics") < final.index("## Layers")
        and "| `classifier.4` | Linear | 10 | 1,290 | 2,560 |" in final
    )
    assert "## Layers" not in RunSummary("vl-train", metrics, {1: 0.9}, [], tmp_path).markdown()


# ---- saliency and Grad-CAM ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["cnn", "lenet5", "resnet_small"])
def test_saliency_and_grad_cam_agree_with_captum(name):
    from captum.attr import LayerGradCam, Saliency

    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(6, *in_shape_of(name)).requires_grad_()  # as captum wants its inputs
    target = torch.tensor([0, 1, 2, 3, 4, 5])
    found = saliency.attributions(model, x, target)
    expected = Saliency(model).attribute(x, target=target, abs=True).amax(1)
    assert found.saliency.shape == x.shape[:1] + x.shape[2:]
    assert torch.allclose(found.saliency, expected, rtol=1e-4, atol=1e-7)
    assert found.cam_layer == "features", "the last feature map larger than 1x1: the last conv stage's output"
    cam = LayerGradCam(model, model.features).attribute(x, target=target, relu_attributions=True)[:, 0]
    assert found.cam.shape == cam.shape and torch.allclose(found.cam, cam, rtol=1e-4, atol=1e-6)
    assert found.cam.amax() > 0


def test_maps_are_of_the_predicted_class_and_leave_the_training_state_alone():
    model = CNN((1, 28, 28), 10, channels=[4, 8], hidden=[16])
    x = torch.randn(5, 1, 28, 28)
    F.cross_entropy(model(x), torch.zeros(5, dtype=torch.long)).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.train()
    with torch.inference_mode():  # as the pictures are drawn
        found = saliency.attributions(model, x)
    assert model.training and all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(found.target, model.eval()(x).argmax(1))
    assert torch.allclose(found.saliency, saliency.attributions(model, x, found.target).saliency)


def test_a_model_without_feature_maps_gets_saliency_only():
    found = saliency.attributions(MLP((1, 28, 28), 10, hidden=[32]), torch.randn(3, 1, 28, 28))
    assert found.saliency.shape == (3, 28, 28) and found.cam is None and found.cam_layer is None


def test_heat_tiles_go_from_white_to_dark_blue_each_on_its_own_scale():
    maps = torch.zeros(2, 2, 2)
    maps[0, 0, 1], maps[1, 1, 0] = 3.0, 0.001
    tiles = saliency.heat_tiles(maps, (2, 2))
    white, dark = visuals.blues(torch.tensor(0.0)).float() / 255, visuals.blues(torch.tensor(1.0)).float() / 255
    assert torch.equal(tiles[0, :, 0, 1], dark) and torch.equal(tiles[1, :, 1, 0], dark), (
        "each map's largest value is the darkest"
    )
    assert torch.equal(tiles[0, :, 1, 1], white)
    assert saliency.heat_tiles(torch.rand(4, 3, 3), (28, 28)).shape == (4, 3, 28, 28), (
        "a 3x3 Grad-CAM is stretched to the image"
    )


@pytest.fixture(scope="module")
def shapes_splits():
    raw = Synthetic(train_size=300, test_size=100).load()
    return make_splits(raw, torch.arange(250), torch.arange(250, 300), torch.device("cpu"))


def tinted(image: torch.Tensor, channel: int) -> int:
    """Pixels where one channel stands out
    (red: firebrick captions, green: forestgreen ones; the maps are blue, the images grey)."""
    rgb = image.int()
    others = [c for c in range(3) if c != channel]
    return int(((rgb[channel] - rgb[others[0]] > 40) & (rgb[channel] - rgb[others[1]] > 40)).sum())


def test_the_saliency_picture_shows_the_mistakes_then_right_answers(shapes_splits):
    model = CNN((1, 28, 28), 10, channels=[8, 16])
    with torch.inference_mode():
        predicted = model.eval()(shapes_splits.test.batch(torch.arange(100))[0]).argmax(1)
        right = predicted == shapes_splits.test.labels
        wrong = (~right).nonzero().flatten()[:5]
        image = saliency.saliency_picture(model, shapes_splits.test, wrong, SHAPES)
    shown = len(wrong) + min(saliency.CORRECT, int(right[: saliency.CANDIDATES].sum()))
    assert image.dtype == torch.uint8 and image.shape[0] == 3
    layout = visuals.picture(
        torch.zeros(3 * shown, 3, 28, 28), 3 * saliency.IMAGES_PER_ROW, title="t", captions=["a\nb"] * 3 * shown
    )
    assert image.shape[1] == layout.shape[1] and image.shape[2] >= layout.shape[2], (
        "each image and its two maps, four images a row"
    )
    assert tinted(image, 0) > 0 and tinted(image, 1) > 0, (
        "red captions under the mistakes, green under the right answers"
    )

    assert saliency.saliency_picture(KNN((1, 28, 28), 10), shapes_splits.test, wrong, SHAPES) is None


def ink_boxes(images: torch.Tensor) -> torch.Tensor:
    """Each digit's bounding box (the smallest rectangle holding every nonzero pixel) as a mask `[N, H, W]`."""
    ink = images[:, 0] > 0
    rows, cols = ink.any(2), ink.any(1)
    boxes = torch.zeros_like(ink)
    for box, r, c in zip(boxes, rows, cols):
        r, c = r.nonzero().flatten(), c.nonzero().flatten()
        box[r.min() : r.max() + 1, c.min() : c.max() + 1] = True
    return boxes


@pytest.fixture
def one_thread():
    """Training in the test on one thread, as the suite's runs do (trainer.threads=1): on shared cores,
    two threads wait on each other."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_a_trained_mnist_cnns_saliency_lies_on_the_digit(shared_data, one_thread):
    raw = MNIST(root=str(shared_data), download=False, train_size=6000, test_size=200).load()
    splits = make_splits(raw, torch.arange(6000), torch.arange(5900, 6000), torch.device("cpu"))
    torch.manual_seed(0)
    model = CNN((1, 28, 28), 10, channels=[8, 16], hidden=[32], dropout=0.0)
    x, labels = splits.test.batch(torch.arange(200))
    boxes = ink_boxes(splits.test.images[:200])

    def density_ratio(maps: torch.Tensor) -> torch.Tensor:
        """Per image: the mean of the map inside the digit's box over its mean outside."""
        inside = (maps * boxes).sum((1, 2)) / boxes.sum((1, 2))
        return inside / ((maps * ~boxes).sum((1, 2)) / (~boxes).sum((1, 2)))

    untrained = density_ratio(saliency.attributions(model, x).saliency)
    optimizer = torch.optim.Adam(model.parameters(), 0.01)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):  # a few seconds: about 96% test accuracy
        images, targets = splits.train.batch(torch.randint(0, 6000, (64,), generator=generator))
        optimizer.zero_grad()
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()
    found = saliency.attributions(model, x)
    assert (found.target == labels).float().mean() > 0.9
    trained = density_ratio(found.saliency)
    assert trained.median() > 2 and (trained > 1).all(), "the gradient is denser on every digit than around it"
    assert trained.median() > 1.3 * untrained.median(), (
        "and more so than before training: it is what the network learned"
    )
    box_share = boxes.float().mean((1, 2))
    cam = F.interpolate(found.cam.unsqueeze(1), size=(28, 28), mode="bilinear", align_corners=False)[:, 0]
    cam_share = (cam * boxes).sum((1, 2)) / cam.sum((1, 2)).clamp_min(1e-12)
    assert found.cam.shape == (200, 7, 7) and cam_share.mean() > 1.4 * box_share.mean(), (
        "Grad-CAM's mass is on the digit too"
    )


# ---- the embedding ---------------------------------------------------------------------------------------------


def projector_files(log_dir) -> dict:
    """The projector's files for each embedding, found as TensorBoard finds them: through projector_config.pbtxt."""
    config = text_format.Parse((log_dir / "projector_config.pbtxt").read_text(), ProjectorConfig())
    return {
        e.tensor_name: (
            log_dir / e.tensor_path,
            log_dir / e.metadata_path,
            log_dir / e.sprite.image_path,
            list(e.sprite.single_image_dim),
        )
        for e in config.embeddings
    }


def embed(model, split, points, tmp_path, watch=None, batch_size=16) -> int:
    """The test pass with a Penultimate recorder among its watchers, then its points into a fresh writer at step 7."""
    recorder = embeddings.Penultimate(model, len(split), points)
    evaluate(model, split, None, batch_size, watch=all_of([recorder, *([watch] if watch else [])]))
    with SummaryWriter(str(tmp_path)) as writer:
        return recorder.write(writer, split, SHAPES, step=7)


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet_small"])
def test_the_embedding_has_one_row_per_image_with_its_features_and_classes(shapes_splits, tmp_path, name):
    model = {
        "cnn": lambda: CNN((1, 28, 28), 10, channels=[4, 8], hidden=[24]),
        "mlp": lambda: MLP((1, 28, 28), 10, hidden=[40, 24]),
        "resnet_small": lambda: ResNet((1, 28, 28), 10, widths=[8, 24], blocks=1),
    }[name]()
    finder = MistakeFinder(4, False, torch.device("cpu"))
    assert embed(model, shapes_splits.test, 30, tmp_path, watch=finder) == 30
    assert finder.seen == 100, "the mistake finder saw the same batches"
    ((tag, (tensors, metadata, sprite, size)),) = projector_files(tmp_path).items()
    assert tag.startswith(embeddings.TAG) and "00007" in str(tensors)
    index = embeddings.spaced(100, 30)
    x, labels = shapes_splits.test.batch(index)
    with torch.no_grad():
        model.eval()
        last = model.classifier[-1] if name != "mlp" else model.net[-1]
        hidden = model.classifier[:-1](model.features(x)) if name != "mlp" else model.net[:-1](x)
        predicted = model(x).argmax(1)
    assert torch.allclose(last(hidden), model(x), atol=1e-5), "the features are what the last layer turns into scores"
    rows = torch.tensor([[float(v) for v in line.split("\t")] for line in tensors.read_text().splitlines()])
    assert rows.shape == (30, 24) and torch.allclose(rows, hidden, atol=1e-5)
    header, *lines = metadata.read_text().splitlines()
    assert header == "true\tpredicted"
    assert lines == [f"{SHAPES[t]}\t{SHAPES[p]}" for t, p in zip(labels.tolist(), predicted.tolist())]
    assert size == [28, 28] and Image.open(sprite).size == (6 * 28, 6 * 28), "30 thumbnails in a 6x6 square"


def test_the_points_are_capped_and_spread_over_the_split(shapes_splits, tmp_path):
    assert embeddings.spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert embeddings.spaced(3, 2000).tolist() == [0, 1, 2], "fewer images than the cap: all of them"
    assert embed(CNN((1, 28, 28), 10), shapes_splits.test, 2000, tmp_path) == 100
    assert embeddings.thumbnails(torch.full((2, 3, 64, 48), 255, dtype=torch.uint8)).shape == (2, 3, 32, 24)


@pytest.mark.parametrize(
    "model,points",
    [(Linear((1, 28, 28), 10), 50), (KNN((1, 28, 28), 10), 50), (CNN((1, 28, 28), 10), 0)],
    ids=["linear", "knn", "zero points: off"],
)
def test_no_embedding_without_a_layer_before_the_scores_or_points(shapes_splits, tmp_path, model, points):
    if isinstance(model, KNN):
        model.fit(shapes_splits.train)
    hooks = sum(len(m._forward_pre_hooks) for m in model.modules())
    assert embed(model, shapes_splits.test, points, tmp_path) == 0
    assert not (tmp_path / "projector_config.pbtxt").exists()
    assert sum(len(m._forward_pre_hooks) for m in model.modules()) == hooks, "no hook left behind"
