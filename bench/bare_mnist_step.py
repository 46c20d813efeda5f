"""The least a hand-written script does before its first training step, for bench/startup.py.

Import torch, read MNIST's 60,000 training images and labels, build visionlab's default CNN
(`model=cnn`, written out in plain torch), take one Adam step on a batch of 128, and print
"step 1 loss ..." after it, as `vl-train trainer.log_every_n_steps=1` prints "epoch 1 step 1 loss ...".

    .venv/bin/python bench/bare_mnist_step.py /work/shared/data
"""

import sys

import torch
from torch import nn


def read_bytes(path: str, header: int) -> torch.Tensor:
    with open(path, "rb") as f:
        return torch.frombuffer(bytearray(f.read()[header:]), dtype=torch.uint8)


raw = f"{sys.argv[1]}/MNIST/raw"
images = read_bytes(f"{raw}/train-images-idx3-ubyte", 16).view(-1, 1, 28, 28)
labels = read_bytes(f"{raw}/train-labels-idx1-ubyte", 8).long()
model = nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1, bias=False),
    nn.BatchNorm2d(16),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1, bias=False),
    nn.BatchNorm2d(32),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Conv2d(32, 64, 3, padding=1, bias=False),
    nn.BatchNorm2d(64),
    nn.ReLU(),
    nn.MaxPool2d(2),
    nn.Flatten(),
    nn.Linear(64 * 3 * 3, 128),
    nn.ReLU(),
    nn.Dropout(0.25),
    nn.Linear(128, 10),
)
optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
index = torch.randperm(len(images))[:128]
batch = (images[index].float() / 255 - 0.1307) / 0.3081
loss = nn.functional.cross_entropy(model(batch), labels[index], label_smoothing=0.1)
optimizer.zero_grad()
loss.backward()
optimizer.step()
print(f"step 1 loss {loss.item():.4f}", flush=True)
