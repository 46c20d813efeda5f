"""`val/mistakes`, `test/mistakes`: the most confidently wrong images, with the predicted and the true class."""

from __future__ import annotations

from typing import Annotated

from visionlab.reporting import visuals
from visionlab.reporting.pictures.picture import EVERY, Evaluation, Picture


class Mistakes(Picture):
    """Val every N epochs, test's once at the end (unless 0); the mistakes are PictureLog's shared ones."""

    shows_input = True
    called = "mistakes"

    def __init__(self, mistakes_every_n_epochs: Annotated[int, EVERY] = 1):
        self.every = mistakes_every_n_epochs

    def wants(self, epoch: int | None) -> bool:
        return self.every > 0 if epoch is None else self.due(self.every, epoch)

    def end_epoch(self, val: Evaluation) -> None:
        self.draw(val)

    def finish(self, test: Evaluation) -> None:
        self.draw(test)

    def draw(self, seen: Evaluation) -> None:
        if seen.mistakes is None or not self.wants(seen.epoch):
            return
        index, predicted, confidence = seen.mistakes.mistakes()
        if not len(index):
            return  # not a single mistake: nothing to show
        split = seen.data
        true = split.labels[index.to(split.labels.device)].cpu()
        tiles = split.images[index.to(split.images.device)].cpu().float() / 255
        what = "vote" if self.subject.votes else "confidence"
        classes = self.classes
        captions = [
            f"{classes[p]} ({visuals.floor_percent(c)})\ntrue {classes[t]}"
            for p, c, t in zip(predicted.tolist(), confidence.tolist(), true.tolist())
        ]
        title = (
            f"{seen.split}: the {len(index)} most confidently wrong{seen.after}: predicted class (its {what}), "
            "true class"
        )
        image = visuals.picture(tiles, 8, title=title, captions=captions, caption_colors=["firebrick"] * len(index))
        self.reporter.image(f"{seen.split}/mistakes", image, seen.step)
