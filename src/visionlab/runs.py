"""A run read back from its folder (docs/architecture.md, "Run directory"): what `visionlab.train` returns.

Everything is read from the folder's files, so a finished run opened later (`visionlab.open_run`), or one
someone else made, reads the same as the one just trained. Nothing here runs code from the folder: metrics.json
is JSON, the config YAML, the history and pictures TensorBoard's event files (protocol buffers and PNGs).
"""

from __future__ import annotations

import io
import json
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from visionlab.errors import UserError

EPOCH_TAGS = ("train/", "val/")  # scalars written once an epoch (docs/architecture.md, "TensorBoard tags")


class Run:
    """One run's folder: its `metrics`, per-epoch `history`, `config`, `checkpoints` and `pictures`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder).expanduser()
        if not (self.folder / "metrics.json").is_file() and not (self.folder / "last.pt").is_file():
            raise UserError(
                f"{self.folder} holds no run (no metrics.json or last.pt): give a run folder, such as "
                "outputs/2026-12-06/14-02-17"
            )

    def __repr__(self) -> str:
        shown = [f"status={self.status}"] + [
            f"{key}={value:.4f}" for key in ("val/acc", "test/acc") if isinstance(value := self.metrics.get(key), float)
        ]
        return f"Run('{self.folder}', {', '.join(shown)})"

    @property
    def metrics(self) -> dict[str, Any]:
        """metrics.json (docs/architecture.md, "metrics.json"); empty while the run has written none."""
        path = self.folder / "metrics.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    @property
    def status(self) -> str | None:
        """completed, interrupted, diverged or pruned (metrics.json's `status`)."""
        return self.metrics.get("status")

    @cached_property
    def config(self) -> DictConfig:
        """The composed config the run was started with (.hydra/config.yaml), interpolations unresolved."""
        return OmegaConf.load(self.folder / ".hydra" / "config.yaml")

    @property
    def checkpoints(self) -> dict[str, Path]:
        """`last` and `best`, where the run wrote them."""
        return {name: self.folder / f"{name}.pt" for name in ("last", "best") if (self.folder / f"{name}.pt").exists()}

    @cached_property
    def _events(self):
        """TensorBoard's event files, read once (a Run is a finished run: `open_run` again to see a later state)."""
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(self.folder), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        return events

    def scalars(self, tag: str) -> list[tuple[int, float]]:
        """(step, value) of one TensorBoard scalar, such as `train/batch_loss` or `lr`."""
        events = self._events
        if tag not in events.Tags()["scalars"]:
            raise UserError(f"{tag} is not a scalar of {self.folder}: use one of {', '.join(events.Tags()['scalars'])}")
        return [(event.step, event.value) for event in events.Scalars(tag)]

    @property
    def history(self) -> list[dict[str, float]]:
        """One dict per epoch: `step` and every train/ and val/ scalar of that epoch (kNN: one row, its memorizing)."""
        events = self._events
        rows: dict[int, dict[str, float]] = {}
        for tag in events.Tags()["scalars"]:
            if tag.startswith(EPOCH_TAGS) and tag != "train/batch_loss":
                for event in events.Scalars(tag):
                    rows.setdefault(event.step, {"step": event.step})[tag] = event.value
        return [rows[step] for step in sorted(rows)]

    @property
    def pictures(self) -> list[str]:
        """The TensorBoard tags of the run's pictures (docs/pictures.md), in the order they were written."""
        return list(self._events.Tags()["images"])

    def picture(self, tag: str) -> Image.Image:
        """The last picture written under `tag`, as a PIL image."""
        events = self._events
        if tag not in events.Tags()["images"]:
            shown = ", ".join(events.Tags()["images"]) or "none: the run drew no pictures (logging=none?)"
            raise UserError(f"{tag} is not a picture of {self.folder}: use one of {shown}")
        return Image.open(io.BytesIO(events.Images(tag)[-1].encoded_image_string))

    def show(self, tag: str) -> None:
        """The picture under `tag` shown inline in a notebook (`picture(tag)` gives it to a script)."""
        from IPython.display import display

        display(self.picture(tag))
