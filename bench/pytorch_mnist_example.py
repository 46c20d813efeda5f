"""The usual hand-written training script: a faithful local copy of pytorch/examples `mnist/main.py`.

Same model (`Net`: two 3x3 convs of 32 and 64 filters, max pool, dropout, 128-unit FC), same data
path (torchvision's MNIST with per-sample `ToTensor` and `Normalize((0.1307,), (0.3081,))`, a
`DataLoader` of batch 64 for training and 1000 for test), same optimizer (Adadelta, lr 1.0) and
schedule (StepLR, gamma 0.7 per epoch), seed 1, a log line every 10 batches. On a CPU the original
passes no `shuffle`, `num_workers` or `pin_memory` (it adds them for CUDA only), and neither does this.
Only `--epochs`' default (14), the data folder and the timing options differ.

    .venv/bin/python bench/pytorch_mnist_example.py --data /work/shared/data --stop-at 0.99   # the real thing,
                                                                                              # until 99.0%
        # (bench/mnist_time_to_accuracy.py runs this once per machine, with --json, and caches its time)
    .venv/bin/python bench/pytorch_mnist_example.py --data /work/shared/data --train-batches 100 --test-batches 2 --json
        # bench/mnist_time_to_accuracy.py's timed fraction: 1 warm-up batch, then 100 timed; 2 test batches
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
from torch.optim.lr_scheduler import StepLR
from torchvision import datasets, transforms


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)


def train(model, device, train_loader, optimizer, epoch, log_interval=10, stamps=None, max_batches=None):
    """The original's train(); `stamps` (a list) gets time.monotonic() after every batch, `max_batches` stops early.

    monotonic is one clock for every process on the machine, so a caller can time from its own launch of this script.
    """
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % log_interval == 0:
            print(
                f"Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} "
                f"({100.0 * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}"
            )
        if stamps is not None:
            stamps.append(time.monotonic())
        if max_batches is not None and batch_idx + 1 >= max_batches:
            break


def test(model, device, test_loader, max_batches=None):
    """The original's test(); returns the accuracy over the batches it saw."""
    model.eval()
    test_loss = 0
    correct = 0
    seen = 0
    with torch.no_grad():
        for batch_idx, (data, target) in enumerate(test_loader):
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction="sum").item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()
            seen += len(data)
            if max_batches is not None and batch_idx + 1 >= max_batches:
                break
    test_loss /= seen
    print(f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{seen} ({100.0 * correct / seen:.0f}%)\n")
    return correct / seen


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder holding MNIST/raw/")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--test-batch-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.7)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-interval", type=int, default=10)
    parser.add_argument("--stop-at", type=float, help="stop after the first epoch whose test accuracy reaches this")
    parser.add_argument(
        "--train-batches", type=int, help="timing: one warm-up batch, then this many timed; then the test batches"
    )
    parser.add_argument("--test-batches", type=int, help="timing: test batches to time")
    parser.add_argument("--json", action="store_true", help="print the timings as JSON on the last line")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    device = torch.device("cpu")
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset1 = datasets.MNIST(args.data, train=True, download=False, transform=transform)
    dataset2 = datasets.MNIST(args.data, train=False, transform=transform)
    train_loader = torch.utils.data.DataLoader(dataset1, batch_size=args.batch_size)
    test_loader = torch.utils.data.DataLoader(dataset2, batch_size=args.test_batch_size)
    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)
    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)

    if args.train_batches:
        stamps = []
        train(model, device, train_loader, optimizer, 1, args.log_interval, stamps, max_batches=args.train_batches + 1)
        tested = time.monotonic()
        test(model, device, test_loader, max_batches=args.test_batches)
        timings = {
            "first_batch_done": stamps[0],
            "train_batches": len(stamps) - 1,
            "train_seconds": stamps[-1] - stamps[0],
            "batches_per_epoch": len(train_loader),
            "test_batches": args.test_batches,
            "test_seconds": time.monotonic() - tested,
            "test_batches_per_pass": len(test_loader),
        }
        print(json.dumps(timings) if args.json else timings, flush=True)
        return

    started = time.perf_counter()
    accuracies = []
    for epoch in range(1, args.epochs + 1):
        train(model, device, train_loader, optimizer, epoch, args.log_interval)
        accuracies.append(test(model, device, test_loader))
        scheduler.step()
        print(
            f"epoch {epoch}: test accuracy {accuracies[-1]:.4f}, {time.perf_counter() - started:.1f} s since the "
            "first batch",
            flush=True,
        )
        if args.stop_at is not None and accuracies[-1] >= args.stop_at:
            break
    if args.json:
        print(json.dumps({"epochs": len(accuracies), "accuracies": accuracies}), flush=True)


if __name__ == "__main__":
    main()
