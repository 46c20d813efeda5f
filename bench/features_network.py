"""Neural networks as learnable feature transforms: kNN and a linear classifier on CIFAR-10's pixels, on HOG +
colour, on a bag of words, and on the penultimate activations of a CNN (`features=network`); the same two on
MNIST's pixels and on its CNN's features; and the features of the MNIST-trained CNN carried over to another set.

    .venv/bin/python bench/features_network.py                          # trains both CNNs first (CPU: tens of minutes)
    .venv/bin/python bench/features_network.py --checkpoint outputs/DATE/TIME --mnist-checkpoint outputs/DATE/TIME
    .venv/bin/python bench/features_network.py --quick                  # 300 train / 100 test images: a smoke run
    .venv/bin/python bench/features_network.py --parts mnist,transfer   # some of cifar10, mnist, transfer

The course's demonstration (docs/features.md, "Network features"): the same two classifiers, a different input each
time. The CIFAR-10 network is `vl-train dataset=cifar10 model=cnn` with every default (its recipe: up to 10 epochs,
early stopping, best epoch tested), or the run --checkpoint names; the transfer network `vl-train dataset=mnist
model=cnn`, or --mnist-checkpoint. Its features are taken on Fashion-MNIST where `<--mnist>/FashionMNIST/raw/` exists,
else on CIFAR-10 (turned grey and resized to 28x28 by the features, as the network was trained): a network carried to
images it never saw. Every classifier runs without augmentation (features are computed once from the images as they
are; pixels get none either, so the rows differ by their input alone). kNN chooses k among 1, 3, 5, 7, 9 on val; the
linear classifier trains with Adam (10 epochs; --quick 2). The bag of words is `experiment=cifar10_bow`'s: 600 words
(--quick: 20 words on patches every 4 pixels). Each row gives a test accuracy beside the pixels' on the same images;
the runs are one process's `visionlab.train` calls, seed 0, and their seconds are not compared (the cache is new every
time).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from common import FIRST_EPOCH, Row, absolute, cifar_root, main, mnist_root, parser

QUICK = ["dataset.train_size=300", "dataset.test_size=100"]
NO_AUGMENT = ["dataset.augment.crop_padding=0", "dataset.augment.flip=false"]
KNN = ["model=knn", "model.k=[1,3,5,7,9]"]
BOW = ["features=bow", "features.bow.words=600", "features.bow.sample=150000", "features.bow.iterations=30"]
BOW_QUICK = ["features=bow", "features.bow.words=20", "features.bow.stride=4", "features.bow.sample=2000"]


def train(overrides: list[str], run_dir: Path) -> dict:
    """One run in this process; its metrics.json."""
    import visionlab

    return visionlab.train(*overrides, "trainer.device=cpu", f"hydra.run.dir={run_dir}").metrics


def percent(metrics: dict) -> str:
    return f"{100 * metrics['test/acc']:.2f}%"


def points(ours: dict, baseline: dict) -> str:
    return f"{100 * (ours['test/acc'] - baseline['test/acc']):+.2f} points"


def rows(args) -> list[Row]:
    quick = " --quick" * args.quick
    small = QUICK if args.quick else []
    linear = ["model=linear", f"trainer.epochs={2 if args.quick else 10}"]
    parts = args.parts.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        cifar = ["dataset=cifar10", f"dataset.root={cifar_root(args.cifar)}", *small]
        mnist = ["dataset=mnist", f"dataset.root={mnist_root(args.mnist)}", *small]
        plain = ["logging=none", f"features.cache_dir={scratch / 'cache'}"]

        def network(data: list[str], given: Path | None, name: str) -> tuple[Path, dict | None]:
            """A CNN's run folder: the one given, or one trained here (then also its metrics)."""
            if given is not None:
                return given, None
            folder = scratch / name
            return folder, train([*data, "model=cnn", "logging=none", *(FIRST_EPOCH if args.quick else [])], folder)

        def compared(data: list[str], inputs: dict[str, list[str]], title: str) -> tuple[list[Row], dict, dict]:
            """kNN and the linear classifier on the pixels, then on each input: a row each, and their metrics."""
            out, on_pixels, last = [], {}, {}
            for model, chosen in (("kNN", KNN), ("linear", linear)):
                pixels = on_pixels[model] = train([*data, *NO_AUGMENT, *chosen, *plain], scratch / f"{title}-{model}")
                for number, (name, features) in enumerate(inputs.items()):
                    found = last[model] = train(
                        [*data, *NO_AUGMENT, *chosen, *features, *plain], scratch / f"{title}-{model}-{number}"
                    )
                    out.append(
                        Row(
                            f"network features: {title}, {name}, {model} test/acc{quick}",
                            percent(found),
                            f"{percent(pixels)} (pixels)",
                            points(found, pixels),
                        )
                    )
            return out, on_pixels, last

        out, on_cifar_pixels = [], {}
        if "cifar10" in parts:
            cnn, trained = network(cifar, args.checkpoint, "cifar10-cnn")
            inputs = {
                "HOG+colour": ["features=hog+color"],
                "bag of words": BOW_QUICK if args.quick else BOW,
                "the CIFAR-10 CNN's penultimate layer": ["features=network", f"features.network.checkpoint={cnn}"],
            }
            found, on_cifar_pixels, last = compared(cifar, inputs, "CIFAR-10")
            out += found
            if trained is not None:
                out.append(
                    Row(
                        f"network features: CIFAR-10, model=cnn itself against a linear classifier on its features"
                        f"{quick}",
                        f"{percent(trained)} ({trained['epochs']} epoch{'s' * (trained['epochs'] != 1)})",
                        f"{percent(last['linear'])} (linear on its penultimate layer)",
                        points(trained, last["linear"]),
                    )
                )
        if "mnist" in parts or "transfer" in parts:
            mnist_cnn, _ = network(mnist, args.mnist_checkpoint, "mnist-cnn")
            from_mnist = ["features=network", f"features.network.checkpoint={mnist_cnn}"]
        if "mnist" in parts:
            out += compared(mnist, {"the MNIST CNN's penultimate layer": from_mnist}, "MNIST")[0]
        if "transfer" in parts:
            fashion = args.mnist / "FashionMNIST" / "raw"
            if fashion.is_dir():
                target, data = "Fashion-MNIST", ["dataset=fashion_mnist", f"dataset.root={args.mnist}", *small]
                on_pixels = {}
            else:  # the CIFAR-10 part's pixel rows, where it ran, are this set's
                target, data = "CIFAR-10 turned grey and resized to 28x28 by the features", cifar
                on_pixels = on_cifar_pixels
            for model, chosen in (("kNN", KNN), ("linear", linear)):
                pixels = on_pixels.get(model) or train(
                    [*data, *NO_AUGMENT, *chosen, *plain], scratch / f"pixels-{model}"
                )
                found = train([*data, *NO_AUGMENT, *chosen, *from_mnist, *plain], scratch / f"transfer-{model}")
                out.append(
                    Row(
                        f"network features: transfer, the MNIST CNN's penultimate layer on {target}, {model} "
                        f"test/acc{quick}",
                        percent(found),
                        f"{percent(pixels)} (its pixels)",
                        points(found, pixels),
                    )
                )
    return out


if __name__ == "__main__":
    arguments = parser(__doc__)
    arguments.add_argument(
        "--checkpoint", type=absolute, help="a CIFAR-10 CNN's run folder or .pt (default: train one here)"
    )
    arguments.add_argument(
        "--mnist-checkpoint", type=absolute, help="an MNIST CNN's run folder or .pt (default: train one here)"
    )
    arguments.add_argument(
        "--parts", default="cifar10,mnist,transfer", help="which comparisons, comma-separated (default: all)"
    )
    main("network features", rows, arguments.parse_args())
