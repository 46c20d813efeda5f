"""`lr_find=true`: the learning-rate range test, on the first partition's train split, set up as training is."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from typing import Any

import torch
from PIL import Image

from visionlab.data import RawData
from visionlab.data.folds import Partition
from visionlab.errors import UserError
from visionlab.experiment.components import Components, fresh_model, partition_splits
from visionlab.experiment.context import RunContext
from visionlab.optimization import constant
from visionlab.reporting import visuals
from visionlab.reporting.metrics_file import write_metrics
from visionlab.reporting.reporter import Reporter
from visionlab.training.callbacks import StopOnRequest
from visionlab.training.learners import GradientLearner
from visionlab.training.loop import fit, steps_per_epoch
from visionlab.training.lr_find import RangeRecord, suggestion, warms_up
from visionlab.training.threads import ShareCores

log = logging.getLogger("visionlab")


def find_lr(components: Components, context: RunContext, raw: RawData, partition: Partition) -> dict[str, Any]:
    """The range test with the run's model, loss and optimizer, and the training state training would start
    from (its schedule replaced by the rising lr, no EMA); no checkpoint, no test."""
    splits = partition_splits(components, raw, partition, context.device)
    model = fresh_model(components, splits, context.device)
    learner = components.learner
    if not isinstance(learner, GradientLearner):
        raise UserError(f"lr_find=true needs a model with trainable parameters: {type(model).__name__} has none")
    test = components.range_test
    trainer = components.trainer
    steps = steps_per_epoch(len(splits.train), trainer.images_per_step(len(splits.train)), drop_last=trainer.drop_last)
    settings = dataclasses.replace(components.trainer, epochs=-(-test.steps // steps), ema=None)
    state = learner.training_state(model, splits, settings, schedule=constant)
    record = RangeRecord(test)
    log.info(
        "lr_find: the lr rises from %g to %g over %d steps (scheduler not used; the train split only)",
        test.min_lr,
        test.max_lr,
        test.steps,
    )
    fit(
        state,
        splits,
        learner.augment,
        learner.objective_of(model),
        settings,
        [record, StopOnRequest(context.stop), ShareCores(context.threads)],
    )
    edge = record.edge()
    suggested, rule = suggestion(edge, warmup=warms_up(learner.schedule, components.trainer.epochs, steps))
    found = {
        "status": "lr_find",
        "suggested_lr": suggested,
        "rule": rule,
        "lowest_loss_lr": edge,
        "steps": len(record.lrs),
        "seconds": round(time.perf_counter() - context.started, 3),
        "lr": record.lrs,
        "loss": record.losses,
        "smoothed_loss": record.smoothed(),
    }
    folder = context.folder
    write_metrics(folder / "lr_find.json", found)
    picture = range_chart(record, suggested, rule)
    Image.fromarray(picture.permute(1, 2, 0).numpy()).save(folder / "lr_find.png")
    with contextlib.closing(Reporter(folder, settings.epochs, components.trainer.log_every_n_steps)) as reporter:
        reporter.image("lr_find/loss_vs_lr", picture, 0)
    log.info(
        "lr_find: suggested lr %.3g, %s, after %d steps: try optimizer.lr=%.2g; %s",
        suggested,
        rule,
        len(record.lrs),
        suggested,
        folder / "lr_find.png",
    )
    return found


def range_chart(record: RangeRecord, suggested: float, rule: str) -> torch.Tensor:
    """The smoothed loss against the lr on a log scale, the suggestion marked."""
    curve = record.smoothed()
    image, _ = visuals.line_chart(
        record.lrs[: len(curve)],
        curve,
        log_x=True,
        markers=False,
        mark=(suggested, f"suggested lr {suggested:.3g}"),
        title=f"learning-rate range test: {len(record.lrs)} steps; suggested: {rule}",
        x_label="learning rate (log scale)",
        y_label="training loss (smoothed)",
    )
    return image
