"""Fashion-MNIST: Zalando's 28x28 grey photos of clothes in 10 classes, in MNIST's four IDX files.

Read from `<root>/FashionMNIST/raw/`, where torchvision downloads them; a drop-in harder MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from visionlab.data.mnist import MNIST


@dataclass
class FashionMNIST(MNIST):
    name: ClassVar[str] = "FashionMNIST"
    classes: ClassVar[list[str]] = [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ]
