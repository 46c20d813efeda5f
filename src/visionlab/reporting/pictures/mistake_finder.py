"""The most confident mistakes of one evaluate() pass, picked as it goes: shared by the pictures that show them."""

from __future__ import annotations

import torch

from visionlab.training import distributed

MISTAKES = 16  # most confidently wrong images kept per evaluation


class MistakeFinder:
    """Keeps the `k` most confidently wrong predictions of one evaluate() pass, on the device.

    Called with each batch's (scores, labels) in order. Confidence is the softmax probability of the
    predicted class, or the vote share itself for a model whose scores are already votes (kNN).
    Per batch it costs a softmax and a top-k over k + batch numbers, and never waits on the device. On several
    processes it may watch one rank's part of the split (training.loop.sees_a_part): `start_at`, then `gather`.
    """

    def __init__(self, k: int, votes: bool, device: torch.device):
        self.k = k
        self.votes = votes
        self.seen = 0
        self.confidence = torch.empty(0, device=device)
        self.index = torch.empty(0, dtype=torch.long, device=device)
        self.predicted = torch.empty(0, dtype=torch.long, device=device)

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        probabilities = scores.float() if self.votes else scores.float().softmax(1)
        confidence, predicted = probabilities.max(1)
        confidence = torch.where(predicted == labels, -1.0, confidence)  # right answers rank below every mistake
        index = torch.arange(self.seen, self.seen + len(labels), device=labels.device)
        self.seen += len(labels)
        confidence = torch.cat([self.confidence, confidence])
        top = confidence.topk(min(self.k, len(confidence))).indices
        self.confidence = confidence[top]
        self.index = torch.cat([self.index, index])[top]
        self.predicted = torch.cat([self.predicted, predicted])[top]

    def start_at(self, first: int) -> None:
        """The split index of the first image this rank's part of the evaluation shows it."""
        self.seen = first

    def gather(self) -> None:
        """Every rank's mistakes into every rank's finder (a collective): the k most confident of the whole split."""
        parts = distributed.each_rank((self.confidence.cpu(), self.index.cpu(), self.predicted.cpu(), self.seen))
        device = self.confidence.device
        confidence, index, predicted = (torch.cat(column).to(device) for column in list(zip(*parts))[:3])
        top = confidence.topk(min(self.k, len(confidence))).indices
        self.confidence, self.index, self.predicted = confidence[top], index[top], predicted[top]
        self.seen = max(seen for *_, seen in parts)

    def mistakes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(split indices, predicted classes, confidences) on the CPU, most confident first."""
        wrong = self.confidence >= 0
        return self.index[wrong].cpu(), self.predicted[wrong].cpu(), self.confidence[wrong].cpu()
