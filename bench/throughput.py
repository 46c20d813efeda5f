"""Training throughput: samples per second, visionlab's on-device batches against a DataLoader, same model.

    .venv/bin/python bench/throughput.py            # the full benchmark (a few minutes)
    .venv/bin/python bench/throughput.py --quick    # a smoke run: 1,000 images, a few steps

For linear, MLP and CNN on MNIST and the CNN on CIFAR-10 (the `conf/` defaults: batch 128, Adam,
cifar10's crop-and-flip augmentation), the same training step (forward, loss, backward, Adam step)
is fed two ways, one after the other, each with a fresh copy of the model:

- ours: vl-train's data path, `prepare_data` (uint8 tensors on the device) then per batch one
  gather + normalize (`DeviceSplit.batch`) and the batch-wide augmentation;
- baseline: the usual script's, torchvision's dataset with per-sample transforms (`ToTensor`,
  `Normalize` with the same statistics; `RandomCrop(32, 4)` and `RandomHorizontalFlip` on CIFAR-10)
  and a `DataLoader` (shuffle, batch 128, `num_workers=0` as pytorch/examples uses on a CPU).

Samples per second count the timed steps only (after warm-up steps). The data share is the time
spent getting the batch (gather, normalize, augment; or the DataLoader's next()) over the step's
whole time. Both sides train the same model the same way: the `trainer` defaults (float32,
channels_last) through the same `Precision` and `prepare_model` that vl-train uses. The fast-path
rows change one of them against ours at the defaults: `trainer.channels_last=false`,
`trainer.precision=bf16` and `trainer.compile=true` (not with --quick: it compiles for a minute).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from common import REPO, Row, cifar_root, main, mnist_root, parser

sys.path.insert(0, str(REPO))
from tests.conftest import compose_train  # noqa: E402  (the repository's real config)
from visionlab.config import build  # noqa: E402
from visionlab.cores import allowed  # noqa: E402
from visionlab.data.cifar10 import CLASSES  # noqa: E402
from visionlab.experiment import build_components, prepare_data  # noqa: E402
from visionlab.training.device import resolve_device  # noqa: E402
from visionlab.training.precision import Precision  # noqa: E402
from visionlab.training.speed import configure_torch, prepare_model  # noqa: E402

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def our_batches(split, augment, batch_size: int) -> Callable[[], Batches]:
    def batches() -> Batches:
        while True:
            for index in torch.randperm(len(split), device=split.labels.device).split(batch_size):
                images, labels = split.batch(index)
                yield augment(images), labels

    return batches


def loader_batches(dataset, batch_size: int) -> Callable[[], Batches]:
    def batches() -> Batches:
        while True:
            yield from torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)

    return batches


def baseline_dataset(name: str, root: Path, mean: torch.Tensor, std: torch.Tensor, train_size: int | None):
    from torchvision import datasets, transforms

    normalize = [transforms.ToTensor(), transforms.Normalize(mean.tolist(), std.tolist())]
    if name == "mnist":
        dataset = datasets.MNIST(str(root), train=True, download=False, transform=transforms.Compose(normalize))
    else:

        class CIFAR10(datasets.CIFAR10):
            """torchvision's, minus the md5 checks: the local copy is rebuilt from JPEGs, so its bytes differ."""

            def _check_integrity(self) -> bool:
                return True

            def _load_meta(self) -> None:
                self.classes = list(CLASSES)

        augment = [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip()]
        dataset = CIFAR10(str(root), train=True, download=False, transform=transforms.Compose(augment + normalize))
    return dataset if train_size is None else torch.utils.data.Subset(dataset, range(train_size))


def timed_steps(model, cfg, batches: Callable[[], Batches], device, warmup: int, steps: int, **overrides) -> dict:
    """Samples/s and the data share over `steps` training steps, after `warmup` untimed ones.

    The fast paths are cfg.trainer's (the defaults),
    or `overrides` of them (precision=..., channels_last=..., compile=...).
    """
    trainer = {key: cfg.trainer[key] for key in ("precision", "channels_last", "compile")} | overrides
    model = copy.deepcopy(model)
    prepare_model(model, channels_last=trainer["channels_last"], compile=trainer["compile"])
    model.train()
    loss_fn = build(cfg, "loss")
    optimizer = build(cfg, "optimizer")(model.parameters())
    mixed = Precision(trainer["precision"], device)
    data_seconds = total_seconds = samples = 0.0
    source = batches()
    for step in range(warmup + steps):
        started = time.perf_counter()
        images, labels = next(source)
        images, labels = images.to(device), labels.to(device)
        fetched = time.perf_counter()
        with mixed.autocast():
            loss = loss_fn(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        mixed.backward(loss)
        mixed.step(optimizer)
        loss.item()  # wait for the device, as the loop does every few steps
        if step >= warmup:
            data_seconds += fetched - started
            total_seconds += time.perf_counter() - started
            samples += len(labels)
    return {"samples_per_second": samples / total_seconds, "data_share": data_seconds / total_seconds}


def rows(args) -> list[Row]:
    device = resolve_device("auto")
    configure_torch(device)
    torch.set_num_threads(allowed().cores)  # alone: every core this process may use
    warmup, steps = (1, 2) if args.quick else (args.warmup, args.steps)
    size = ["dataset.train_size=1000"] if args.quick else []
    cases = [("mnist", "linear"), ("mnist", "mlp"), ("mnist", "cnn"), ("cifar10", "cnn")]
    roots = {"mnist": lambda: mnist_root(args.mnist), "cifar10": lambda: cifar_root(args.cifar)}
    out = []
    every = f"{steps} steps of 128 after {warmup} warm-up"
    for dataset_name, model_name in cases:
        root = roots[dataset_name]()
        cfg = compose_train([f"dataset={dataset_name}", f"dataset.root={root}", f"model={model_name}", *size])
        components = build_components(cfg)
        dataset, splits = components.dataset, prepare_data(components, device)
        model = components.model(in_shape=splits.in_shape, num_classes=splits.num_classes).to(device)
        batch_size = cfg.trainer.batch_size
        ours = timed_steps(model, cfg, our_batches(splits.train, dataset.augment, batch_size), device, warmup, steps)
        theirs_data = baseline_dataset(dataset_name, root, splits.mean, splits.std, cfg.dataset.train_size)
        theirs = timed_steps(model, cfg, loader_batches(theirs_data, batch_size), device, warmup, steps)
        name = f"{'MNIST' if dataset_name == 'mnist' else 'CIFAR-10'} {model_name}"
        out += [
            Row(
                f"throughput: {name}, training samples/s ({every})",
                f"{ours['samples_per_second']:,.0f}",
                f"{theirs['samples_per_second']:,.0f} (DataLoader)",
                f"{ours['samples_per_second'] / theirs['samples_per_second']:.1f}x",
            ),
            Row(
                f"throughput: {name}, data path's share of step time",
                f"{ours['data_share']:.1%}",
                f"{theirs['data_share']:.1%} (DataLoader)",
                "",
            ),
        ]
        if dataset_name == "cifar10":
            fast_paths = [
                ("trainer.channels_last=false", {"channels_last": False}),
                ("trainer.precision=bf16", {"precision": "bf16"}),
            ]
            if not args.quick:  # compiling takes a minute on 2 cores
                fast_paths.append(("trainer.compile=true", {"compile": True}))
            for override, setting in fast_paths:
                fast = timed_steps(
                    model, cfg, our_batches(splits.train, dataset.augment, batch_size), device, warmup, steps, **setting
                )
                out.append(
                    Row(
                        f"fast path: {name}, training samples/s, {override} (baseline: ours at the defaults)",
                        f"{fast['samples_per_second']:,.0f}",
                        f"{ours['samples_per_second']:,.0f}",
                        f"{fast['samples_per_second'] / ours['samples_per_second']:.2f}x",
                    )
                )
    return out


if __name__ == "__main__":
    cli = parser(__doc__)
    cli.add_argument("--steps", type=int, default=150, help="timed training steps per measurement")
    cli.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    main("throughput", rows, cli.parse_args())
