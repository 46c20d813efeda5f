"""Which pictures a run draws (the `logging` group's list), and the composite that draws them at the run's fixed points.

Everything runs at epoch boundaries under inference_mode and reuses what the run computes anyway:
the confusion matrix comes out of `evaluate()`, and the mistakes are picked by one `MistakeFinder`
that `evaluate()` shows every batch, made when any picture asks for them and shared by all that do
(the mistakes and the saliency pictures). No picture costs an extra pass over the data.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import logging
import pkgutil
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

from visionlab.checks import declared, shown
from visionlab.compiled import eager
from visionlab.errors import UserError
from visionlab.reporting.pictures.mistake_finder import MISTAKES, MistakeFinder
from visionlab.reporting.pictures.picture import Evaluation, Picture, Subject, Watch
from visionlab.reporting.reporter import Reporter
from visionlab.suggest import did_you_mean
from visionlab.training.loop import all_of

log = logging.getLogger("visionlab")

EXAMPLE = "{_target_: visionlab.reporting.pictures.graph.Graph}"


def setting_names(kind: type[Picture]) -> list[str]:
    """The settings a picture takes: its `__init__`'s named arguments."""
    parameters = inspect.signature(kind).parameters.values()
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


@functools.cache
def builtin_pictures() -> dict[str, type[Picture]]:
    """Every picture this package holds, by its dotted name (as a `_target_` names it)."""
    package = importlib.import_module(__package__)
    found: dict[str, type[Picture]] = {}
    for module in pkgutil.iter_modules(package.__path__):
        loaded = importlib.import_module(f"{__package__}.{module.name}")
        for value in vars(loaded).values():
            if isinstance(value, type) and issubclass(value, Picture) and value.__module__ == loaded.__name__:
                if value is not Picture:
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def picture_class(name: str, node: Any) -> type[Picture]:
    """The class a `logging.pictures.<name>` entry names, or the one-line config error saying why not."""
    target = node.get("_target_") if isinstance(node, Mapping) else None
    if not isinstance(target, str):
        raise UserError(f"logging.pictures.{name}={shown(node)} is invalid: use a picture's class, such as {EXAMPLE}")
    try:
        kind = get_object(target)
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise UserError(f"logging.pictures.{name}._target_={target} cannot be imported ({reason})") from None
    if not (isinstance(kind, type) and issubclass(kind, Picture)):
        raise UserError(
            f"logging.pictures.{name}._target_={target} is not a picture: use a subclass of "
            'visionlab.reporting.pictures.picture.Picture (docs/pictures.md, "How to add a picture")'
        )
    return kind


class PictureList:
    """The `logging` group (conf/logging/), built before any data loads: which pictures a run draws, and how often.

    `pictures` maps a name to `{_target_: a Picture class}`, in the order they draw; the other keys are
    their settings (`logging.graph=false`, `logging.confusion_every_n_epochs=2`), each given to every
    listed picture whose `__init__` names it. A picture's own entry may hold settings too. Each value
    is checked against what the picture declares (checks.py); a key that no picture takes is refused.
    """

    # config.validate checks the other keys against the declarations of the pictures listed under this key
    hands_settings_to: ClassVar[str] = "pictures"

    def __init__(self, pictures: Mapping[str, Any] | None = None, **settings: Any):
        if isinstance(pictures, DictConfig):
            pictures = OmegaConf.to_container(pictures, resolve=True)
        self.kinds: dict[str, tuple[type[Picture], dict[str, Any]]] = {}
        for name, node in (pictures or {}).items():
            kind = picture_class(name, node)
            own = {key: value for key, value in node.items() if not key.startswith("_")}
            given = {key: settings[key] for key in setting_names(kind) if key in settings}
            for key, rule in declared(kind).items():
                if key in own:
                    rule.check(f"logging.pictures.{name}.{key}", own[key])
                elif key in given:
                    rule.check(f"logging.{key}", given[key])
            chosen = given | own
            kind(**chosen)  # a setting its constructor rejects fails now, not at the picture
            self.kinds[name] = (kind, chosen)
        kinds = [*builtin_pictures().values(), *(kind for kind, _ in self.kinds.values())]
        known = sorted({name for kind in kinds for name in setting_names(kind)})
        for key in settings:
            if key not in known:
                hint = did_you_mean(key, known, "logging.{}")
                raise UserError(
                    f"logging.{key} is not a setting of any picture, which take {', '.join(known)}"
                    f"{': ' + hint if hint else ''} (see conf/logging/)"
                )

    def __repr__(self) -> str:
        return f"PictureList({', '.join(self.kinds)})"


def _timed(method):
    """Adds the method's wall time to `self.seconds`: the run log reports what the pictures cost.
    The method runs a compiled model eagerly: the pictures look inside it through hooks."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            with eager():
                return method(self, *args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - started

    return wrapper


def in_words(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


class PictureLog:
    """One partition's pictures, histograms and graph: the listed pictures that apply to its subject.

    The loop calls `watch(epoch)` for the watcher to hand to evaluate() on val, then
    `end_epoch(...)` with evaluate()'s result; the run calls `start()`, then `watch()` and
    `finish(...)` around the one test pass.
    """

    def __init__(self, listed: PictureList, reporter: Reporter, subject: Subject):
        self.subject = subject
        made = []
        for kind, settings in listed.kinds.values():
            picture = kind(**settings)
            picture.bind(subject, reporter)
            made.append(picture)
        off = [picture.called for picture in made if picture.shows_input and picture.called]
        if subject.on_features and off:
            log.info("pictures: the model sees feature vectors, so the %s pictures are off", in_words(off))
        self.pictures = [picture for picture in made if picture.applies()]
        self.finder: MistakeFinder | None = None
        self.seconds = 0.0

    @_timed
    @torch.inference_mode()
    def start(self) -> None:
        for picture in self.pictures:
            picture.start()

    def watch(self, epoch: int | None = None) -> Watch | None:
        """What the coming evaluate() shows its batches to (val after `epoch`; test when None): the pictures' own
        watchers, and one MistakeFinder if any picture wants the mistakes."""
        wanted = any(picture.wants(epoch) for picture in self.pictures)
        device = self.subject.splits.train.labels.device
        self.finder = MistakeFinder(MISTAKES, self.subject.votes, device) if wanted else None
        watches = [watch for picture in self.pictures if (watch := picture.watch(epoch)) is not None]
        return all_of([*watches, *([self.finder] if self.finder is not None else [])])

    @_timed
    @torch.inference_mode()
    def end_epoch(self, epoch: int, step: int, val: dict) -> None:
        seen = Evaluation("val", self.subject.splits.val, step, val, epoch, self._mistakes())
        for picture in self.pictures:
            picture.end_epoch(seen)

    @_timed
    @torch.inference_mode()
    def finish(self, step: int, test: dict) -> None:
        seen = Evaluation("test", self.subject.splits.test, step, test, None, self._mistakes())
        for picture in self.pictures:
            picture.finish(seen)
        log.info("pictures, histograms and graph took %.2f s", self.seconds)

    def _mistakes(self) -> MistakeFinder | None:
        """The finder that saw the evaluation just done, handed on once."""
        finder, self.finder = self.finder, None
        return finder
