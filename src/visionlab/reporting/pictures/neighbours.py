"""`test/neighbours`: the first test images, each followed by its nearest training images, once at the end."""

from __future__ import annotations

from typing import Annotated

import torch

from visionlab.checks import Switch
from visionlab.reporting import visuals
from visionlab.reporting.pictures.picture import Evaluation, Picture

QUERIES = 8  # test images shown with their neighbours
NEIGHBOURS = 8  # neighbours shown per query (the vote may use fewer: the subject's voters)


class Neighbours(Picture):
    """For a model that searches neighbours (kNN): green where a neighbour shares the query's class."""

    shows_input = True
    called = "neighbour"

    def __init__(self, neighbours: Annotated[bool, Switch()] = True):
        self.on = neighbours

    def applies(self) -> bool:
        return super().applies() and self.subject.neighbours is not None

    def finish(self, test: Evaluation) -> None:
        if not self.on:
            return
        subject, classes = self.subject, self.classes
        queried, train = test.data, subject.splits.train
        n, k = min(QUERIES, len(queried)), min(NEIGHBOURS, len(train))
        queries, true = queried.batch(torch.arange(n, device=queried.labels.device))
        _, nearest = subject.neighbours(queries, k)
        predicted = subject.model(queries).argmax(1).tolist()
        tiles = torch.cat([queried.images[:n].unsqueeze(1), train.images[nearest]], 1).flatten(0, 1).cpu().float() / 255
        labels = torch.cat([true.view(-1, 1), train.labels[nearest]], 1).tolist()
        captions, colors = [], []
        for row in labels:
            for position, label in enumerate(row):
                captions.append(f"{'query' if position == 0 else f'#{position}'}\n{classes[label]}")
                colors.append("black" if position == 0 else ("forestgreen" if label == row[0] else "firebrick"))
        voters = subject.voters() if subject.voters is not None else None
        title = f"test queries (left) and their {k} nearest training images"
        if voters is not None:
            title += f"; the first {voters} vote"
        image = visuals.picture(
            tiles,
            k + 1,
            title=title,
            captions=captions,
            caption_colors=colors,
            row_labels=[f"says {classes[p]}" for p in predicted],
        )
        self.reporter.image("test/neighbours", image, test.step)
