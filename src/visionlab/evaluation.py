"""`vl-eval`: a saved model, rebuilt from its checkpoint alone, scored on one split.

The checkpoint holds the resolved config and which partition of the run it belongs to (the
holdout, a fold, k-fold's final model), so the data are prepared exactly as in the run (same
seed, same val split, same normalization). Given a run directory, the file loaded is the one whose
weights took the run's test (best.pt with `trainer.test_on=best`), so it scores the run's own
test/acc exactly (docs/architecture.md, "Checkpoints").
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from visionlab import provenance
from visionlab.checkpoint_format import Checkpoint, run_checkpoint
from visionlab.data import Splits
from visionlab.errors import UserError, writing
from visionlab.experiment import Components, build_components, load_data, prepare_data
from visionlab.training.device import resolve_device
from visionlab.training.loop import evaluate
from visionlab.trust import Allowlist, check_stored, keep_writes_here
from visionlab.tta import with_tta

log = logging.getLogger("visionlab")

SPLITS = ("test", "val", "train")
CHECKPOINT_CHOICES = ("last", "best")  # of a run directory: the file `which` names


def evaluate_checkpoint(
    path: Path, split: str = "test", overrides: list[str] = (), config_dirs: list[str] = (), which: str | None = None
) -> dict[str, Any]:
    """Metrics of the checkpoint at `path` (a file, or a run directory: see `checkpoint_file`) on `split`.

    `overrides` (key=value) change the stored config, e.g. dataset.root=… on another machine;
    they and the YAML of `config_dirs` are what this command trusts beyond conf/ (trust.py).
    """
    if split not in SPLITS:
        raise UserError(f"split={split!r} is unknown: use test, val or train")
    path, components, model, splits = load_model(path, overrides, config_dirs, which)
    trainer = components.trainer
    result = evaluate(
        with_tta(model, trainer.tta), getattr(splits, split), components.learner.scoring_loss(), trainer.eval_batch_size
    )
    confusion = result["confusion"]
    per_class = confusion.diagonal() / confusion.sum(1).clamp(min=1)
    return {
        "checkpoint": str(path),
        "split": split,
        f"{split}/acc": result["acc"],
        f"{split}/loss": result["loss"],
        "per_class_acc": {name: acc for name, acc in zip(splits.classes, per_class.tolist())},
        "confusion_matrix": confusion.tolist(),  # [true class][predicted class]
        "classes": list(splits.classes),
    }


def load_model(
    path: Path, overrides: list[str] = (), config_dirs: list[str] = (), which: str | None = None
) -> tuple[Path, Components, torch.nn.Module, Splits]:
    """The checkpoint's file, what its config (with `overrides`) builds, its model with the saved weights, and
    the data as its partition had it. One line says what of this machine, code and data differs from the
    checkpoint's (provenance.py).

    The stored config may come from anyone: it is checked before anything in it is imported (trust.py).
    """
    path, state = checkpoint_file(path, which)
    check_stored(state.config, path, Allowlist.for_command(config_dirs, overrides))
    cfg = OmegaConf.create(keep_writes_here(state.config))
    try:
        cfg.merge_with_dotlist(list(overrides))
    except OmegaConfBaseException as exc:
        raise UserError(
            f"{' '.join(overrides)}: {str(exc).splitlines()[0]} (use key=value, e.g. dataset.root=/data)"
        ) from None
    components = build_components(cfg)
    device = resolve_device(components.trainer.device)
    raw = load_data(components, device, training=False)
    provenance.tell(state.provenance, provenance.record(device, raw.files))
    splits = prepare_data(components, device, partition=state.place.partition, raw=raw)
    model = components.model(
        in_shape=splits.in_shape, num_classes=splits.num_classes, **state.place.model_overrides
    ).to(device)
    try:
        model.load_state_dict(state.model)
    except RuntimeError as exc:
        raise UserError(f"{path} does not fit the model its config builds ({str(exc).splitlines()[0]})") from None
    model.eval()
    return path, components, model, splits


def checkpoint_file(path: Path, which: str | None) -> tuple[Path, Checkpoint]:
    """The file to load for `path` (checkpoint_format.run_checkpoint's rule), and its contents; for a run directory,
    said in the log with why that file."""
    chosen, state, why = run_checkpoint(path, which)
    if why:
        log.info("checkpoint: %s (%s)", chosen, why)
    return chosen, state


def write_report(metrics: dict[str, Any]) -> Path:
    """`eval_<checkpoint>_<split>.json` next to the checkpoint."""
    path = Path(metrics["checkpoint"])
    out = path.with_name(f"eval_{path.stem}_{metrics['split']}.json")
    with writing(out.parent, out.name):
        out.write_text(json.dumps(metrics, indent=2) + "\n")
    return out
