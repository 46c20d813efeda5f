"""model=airbench and its patch-whitening block: the whitening it promises, fitted once and carried by the
state dict, BatchNorm shifts that learn 64x faster, and a bad shape refused in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import TINY, compose_train, config_error, run_cli
from tests.training.test_fit import StopAtStep
from visionlab.errors import Interrupted, SettingRejected
from visionlab.experiment import build_components, prepare_data
from visionlab.models.airbench import Airbench, ShiftOnlyBatchNorm
from visionlab.models.blocks import PatchWhitening
from visionlab.training.callbacks import Callback, TellEpoch
from visionlab.training.loop import fit


def colour_images(n: int = 40, seed: int = 0) -> torch.Tensor:
    """Correlated channels and neighbouring pixels, as in photographs: smoothed noise plus a shared grey level."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(n, 3, 18, 18, generator=generator)
    smooth = F.avg_pool2d(noise, 3, stride=1)  # 16x16, neighbours correlated
    return smooth + 0.8 * smooth.mean(1, keepdim=True) + 0.3


def patch_covariance(outputs: torch.Tensor) -> torch.Tensor:
    flat = outputs.permute(0, 2, 3, 1).reshape(-1, outputs.shape[1]).double()
    return flat.T @ flat / len(flat)


def test_whitening_decorrelates_the_patches_it_was_fitted_on_to_unit_variance():
    images = colour_images()
    block = PatchWhitening(3, kernel_size=2, eps=0.0)
    block.fit(images)
    with torch.no_grad():
        outputs = F.conv2d(images, block.conv.weight)  # without the bias (zero until trained)
    assert outputs.shape[1] == 24 and torch.equal(block.conv.weight[12:], -block.conv.weight[:12])
    torch.testing.assert_close(patch_covariance(outputs[:, :12]), torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)
    assert not block.conv.weight.requires_grad and block.conv.bias.requires_grad


def test_the_first_training_batch_fits_it_and_nothing_refits_it():
    block = PatchWhitening(3)
    block.eval()(colour_images(seed=1))  # evaluation does not fit: it is not training data
    assert not block.fitted
    block.train()(colour_images(seed=2))
    fitted = block.conv.weight.clone()
    block(colour_images(seed=3))
    assert block.fitted and torch.equal(block.conv.weight, fitted)
    reference = PatchWhitening(3)
    reference.fit(colour_images(seed=2))
    torch.testing.assert_close(fitted, reference.conv.weight)
    restored = PatchWhitening(3)
    restored.load_state_dict(block.state_dict())  # a resumed run or vl-eval: fitted, with the same filters
    restored.train()(colour_images(seed=4))
    assert restored.fitted and torch.equal(restored.conv.weight, fitted)


def test_fitting_under_bf16_autocast_computes_in_full_precision():
    images = colour_images(n=4)
    plain, autocast = PatchWhitening(3), PatchWhitening(3)
    plain.fit(images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast.fit(images)
    assert torch.equal(plain.conv.weight, autocast.conv.weight)


def test_a_shift_only_batchnorm_step_moves_the_shift_64x_and_decays_it_as_every_other_weight():
    """Against airbench's own way: a plain BatchNorm bias in a parameter group of lr x 64, weight decay / 64."""
    x = torch.randn(8, 4, 5, 5) * 3 + 1
    target = torch.randn(8, 4, 5, 5)
    ours = ShiftOnlyBatchNorm(4, momentum=0.6, lr_scale=64)
    theirs = torch.nn.BatchNorm2d(4, eps=1e-12, momentum=0.4)
    theirs.weight.requires_grad_(False)
    with torch.no_grad():
        ours.shift.fill_(0.5 / 8)
        theirs.bias.fill_(0.5)
    lr, decay = 0.01, 0.05
    ours_opt = torch.optim.SGD(ours.parameters(), lr=lr, momentum=0.85, nesterov=True, weight_decay=decay)
    theirs_opt = torch.optim.SGD([theirs.bias], lr=lr * 64, momentum=0.85, nesterov=True, weight_decay=decay / 64)
    for _ in range(3):
        for module, optimizer in ((ours, ours_opt), (theirs, theirs_opt)):
            optimizer.zero_grad()
            F.mse_loss(module(x), target).backward()
            optimizer.step()
    torch.testing.assert_close(ours.shift * 8, theirs.bias)
    torch.testing.assert_close(ours.running_mean, theirs.running_mean)
    assert list(dict(ours.named_parameters())) == ["shift"]  # no scale to learn


def test_the_net_gives_logits_for_cifar_and_mnist_shapes_and_whiten_false_learns_its_first_conv():
    for shape in ((3, 32, 32), (1, 28, 28)):
        model = Airbench(shape, 10, widths=(8, 16, 16))
        assert model(torch.randn(4, *shape)).shape == (4, 10)
    learned = Airbench((3, 32, 32), 10, widths=(8, 16, 16), whiten=False)
    assert learned.features[0].weight.requires_grad and not isinstance(learned.features[0], PatchWhitening)


def test_widths_that_pool_the_image_away_are_refused_in_one_line(tmp_path):
    result = run_cli([*TINY, "model=airbench", "dataset.shape=[1,12,12]", "model.widths=[8,8,8,8]"], tmp_path / "run")
    assert result.returncode == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.stderr
    assert "model.widths=[8, 8, 8, 8] pools a 12x12 image away to nothing" in message and "use fewer widths" in message


AIRBENCH = ["model=airbench", "model.widths=[8,8]", "recipe=none", "optimizer=momentum", "trainer.channels_last=false"]


def learner_setup(overrides: list[str]):
    components = build_components(compose_train([*AIRBENCH, *overrides]))
    return components, prepare_data(components, torch.device("cpu"))


def test_whiten_images_fits_the_whitening_on_the_first_clean_training_images_before_any_step():
    components, splits = learner_setup(["dataset.train_size=200", "model.whiten_images=50"])
    model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
    components.learner.training_state(model, splits, components.trainer)
    whitening = model.features[0]
    assert whitening.fitted
    # airbench's init_whiten, written out: its patches' covariance, eigenvectors scaled by 1/sqrt(eigenvalue + eps)
    images = splits.train.batch(torch.arange(50))[0].double()
    patches = images.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 4)
    eigenvalues, eigenvectors = torch.linalg.eigh(patches.T @ patches / len(patches))
    scaled = eigenvectors.T.reshape(4, 1, 2, 2).flip(0) / torch.sqrt(eigenvalues.flip(0) + 5e-4).view(-1, 1, 1, 1)
    torch.testing.assert_close(whitening.conv.weight, torch.cat([scaled, -scaled]).float(), rtol=1e-4, atol=1e-4)
    unfitted = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes, whiten_images=None)
    components.learner.training_state(unfitted, splits, components.trainer)
    assert not unfitted.features[0].fitted  # null: the first training batch fits it, as before


class Record(Callback):
    def __init__(self):
        self.bias, self.trains = {}, {}

    def after_epoch(self, state, epoch, metrics, val):
        self.bias[epoch] = state.model.features[0].conv.bias.detach().clone()
        self.trains[epoch] = state.model.features[0].conv.bias.requires_grad


def test_whiten_bias_epochs_trains_the_bias_that_many_epochs_then_freezes_it_also_after_a_resume():
    components, splits = learner_setup(["dataset.train_size=200", "trainer.epochs=3", "model.whiten_bias_epochs=1"])
    torch.manual_seed(0)
    model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
    state = components.learner.training_state(model, splits, components.trainer)
    record = Record()
    objective = components.learner.objective_of(model)
    fit(state, splits, components.learner.augment, objective, components.trainer, [TellEpoch(), record])
    assert record.trains == {1: True, 2: False, 3: False}
    assert not torch.equal(record.bias[1], torch.zeros_like(record.bias[1]))  # it trained in epoch 1
    assert torch.equal(record.bias[2], record.bias[1]) and torch.equal(record.bias[3], record.bias[1])
    # a checkpoint's state put into a fresh model (whose bias trains) is told the epoch by the position it resumes at
    fresh = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
    resumed = components.learner.training_state(fresh, splits, components.trainer)
    resumed.load_state_dict(state.state_dict())
    resumed.at.epoch = 2
    assert fresh.features[0].conv.bias.requires_grad
    TellEpoch().start_epoch(resumed, steps=1)
    assert not fresh.features[0].conv.bias.requires_grad


def test_whitening_settings_without_the_whitening_are_refused():
    with pytest.raises(SettingRejected, match="whiten_bias_epochs=3 set the whitening, which model.whiten=false"):
        Airbench((3, 32, 32), 10, whiten=False, whiten_bias_epochs=3)
    assert config_error([*AIRBENCH, "model.whiten_images=0"]).startswith("model.whiten_images=0 is invalid")


def test_a_run_stopped_in_epoch_2_and_resumed_ends_bit_identical_with_alternate_flips_and_a_frozen_bias():
    components, splits = learner_setup(
        [
            "dataset.train_size=200",
            "trainer.epochs=2",
            "trainer.batch_size=64",
            "model.whiten_bias_epochs=1",
            "model.whiten_images=100",
            "dataset.augment.crop_padding=2",
            "dataset.augment.flip=alternate",
            "dataset.augment.crop_padding_mode=reflect",
            "seed=3",
        ]
    )
    learner = components.learner

    def run(state, callbacks=()):
        objective = learner.objective_of(state.model)
        return fit(state, splits, learner.augment, objective, components.trainer, [TellEpoch(), *callbacks])

    def fresh():
        torch.manual_seed(0)
        model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes)
        return learner.training_state(model, splits, components.trainer)

    straight = fresh()
    run(straight)
    stopper = StopAtStep(4)  # 3 steps an epoch: the second step of epoch 2, the bias frozen
    with pytest.raises(Interrupted):
        run(fresh(), [stopper])
    torch.manual_seed(123)  # whatever the global generators did since, the state and the seed bring the same steps
    resumed = fresh()
    resumed.load_state_dict(stopper.saved)
    run(resumed)
    assert not resumed.model.features[0].conv.bias.requires_grad
    for a, b in zip(resumed.model.state_dict().values(), straight.model.state_dict().values()):
        assert torch.equal(a, b) if isinstance(a, torch.Tensor) else a == b  # the whitening's `fitted` flag
