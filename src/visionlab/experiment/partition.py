"""One partition of a run's plan being trained: the holdout, a fold, or k-fold's final model.

`PartitionTraining` owns the partition's reporter and checkpoints for as long as it trains, and
closes them however it ends. A fresh model from the run's seed (folds differ by their data alone)
learns through the run's learner, then takes the test once if the partition is the one that does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from torch import nn

from visionlab.checkpoint_format import Place
from visionlab.compiled import eager
from visionlab.cross_validation import final_model_trainer
from visionlab.data import RawData, Splits
from visionlab.data.folds import Partition
from visionlab.errors import DiskFull
from visionlab.experiment.components import Components, fresh_model, partition_splits
from visionlab.experiment.context import RunContext
from visionlab.features import FeatureSplits
from visionlab.reporting.callbacks import Pictures, Progress
from visionlab.reporting.layer_summary import report_layers
from visionlab.reporting.pictures import PictureLog, Subject
from visionlab.reporting.reporter import Reporter
from visionlab.reporting.summary import command_line
from visionlab.training.checkpoint import Checkpoints
from visionlab.training.learners import Lesson
from visionlab.training.loop import FitResult, evaluate
from visionlab.training.threads import ShareCores
from visionlab.trial_pruning import ReportToTrial
from visionlab.tta import with_tta


class PartitionTraining:
    def __init__(
        self, components: Components, context: RunContext, plan: Sequence[Partition], index: int, done: list[FitResult]
    ):
        self.components = components
        self.context = context
        self.partition = partition = plan[index]
        self.index = index
        self.resume = context.resumes(index)
        learner = components.learner
        # k-fold's final model takes what its folds chose: a kNN's k, with early stopping how long to train
        self.overrides = learner.final_model_overrides(done) if partition.final else {}
        self.trainer = final_model_trainer(components.trainer, done) if partition.final else components.trainer
        folder = context.folder / partition.folder
        self.reporter = Reporter(
            folder,
            components.trainer.epochs,
            components.trainer.log_every_n_steps,
            resumed_at_step=self.resume.position["step"] if self.resume else None,
            later_partitions=len(plan) - index - 1,
            stops_early=components.trainer.early_stopping.enabled,
        )
        self.checkpoints = Checkpoints(
            folder,
            components.objective,
            components.config,
            context.started,
            best=self.resume.best_value if self.resume else None,
            run_last=context.folder / "last.pt",
            provenance=context.provenance,
            place=Place(
                partition=index,
                partitions_done=tuple(stored(result) for result in done),
                model_overrides=self.overrides,
                folder=partition.folder,
                test_checkpoint=learner.test_checkpoint(self.trainer) if partition.test else None,
            ),
        )
        self.layers = ""  # the model's layer table (markdown), when this partition described it

    def __enter__(self) -> PartitionTraining:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if error is None:
            self.reporter.close()
            return
        with contextlib.suppress(DiskFull):  # the write that first found no space is the one to tell
            self.reporter.close()

    def learn(self, raw: RawData, describe_layers: bool) -> tuple[FitResult, dict[str, Any] | None]:
        """Trained or memorized, and tested if the partition takes the test; `describe_layers`: log the model's
        layer table and keep it for summary.md (the first partition this session trains)."""
        components, context, learner = self.components, self.context, self.components.learner
        splits = partition_splits(components, raw, self.partition, context.device)
        self.checkpoints.inputs = inputs_record(splits)
        model = fresh_model(components, splits, context.device, self.overrides)
        if describe_layers:
            self.layers = report_layers(model, splits.in_shape, context.folder, command_line()).markdown()
        visuals = PictureLog(components.pictures, self.reporter, self.subject(model, splits))
        if self.resume is None:
            visuals.start()
        else:
            self.reporter.val_acc.update({epoch: m["val/acc"] for epoch, m in self.resume.history.items()})
        judges = [ShareCores(context.threads)]
        if components.pruning.active:  # after saving, before early stopping: the trial hears of every epoch
            last_epoch = self.trainer.epochs if self.partition.test else None
            first_step = self.index * components.trainer.epochs
            judges.append(ReportToTrial(components.pruning, components.objective, first_step, last_epoch))
        lesson = Lesson(
            model=model,
            splits=splits,
            trainer=self.trainer,
            checkpoints=self.checkpoints,
            stop=context.stop,
            resume=self.resume,
            will_test=self.partition.test,
            watchers=[Progress(self.reporter), Pictures(visuals)],
            judges=judges,
            report=self.reporter.scalars,
        )
        result = learner.learn(lesson)
        if not self.partition.test:
            return result, None
        with eager():  # the pictures' recorder watches through a hook
            test = evaluate(
                with_tta(model, self.trainer.tta),
                splits.test,
                learner.scoring_loss(),
                self.trainer.eval_batch_size,
                watch=visuals.watch(),
            )  # the one and only look at test
        visuals.finish(result.steps, test)
        self.reporter.scalars({"test/loss": test["loss"], "test/acc": test["acc"]}, result.steps)
        return result, test

    def subject(self, model: nn.Module, splits: Splits) -> Subject:
        """What the pictures picture, as the learner describes its model."""
        learner = self.components.learner
        search = learner.neighbours(model)
        return Subject(
            model,
            splits,
            self.components.trainer.epochs,
            on_features=isinstance(splits, FeatureSplits),
            votes=learner.votes,
            neighbours=search,
            voters=(lambda: learner.voters(model)) if search else None,
        )


def inputs_record(splits: Splits) -> dict[str, Any] | None:
    """What the model takes, for its checkpoints (`Checkpoint.inputs`): the image shape, the normalization (its train
    part's per-channel mean and std, exactly: float32 values as Python floats) and the classes; None on features."""
    if isinstance(splits, FeatureSplits):
        return None
    return {
        "shape": list(splits.in_shape),
        "mean": splits.mean.tolist(),
        "std": splits.std.tolist(),
        "classes": list(splits.classes),
    }


def stored(result: FitResult) -> dict[str, Any]:
    """A finished partition's result as a checkpoint holds it: plain values only."""
    plain = asdict(result)
    plain["val"] = {k: v for k, v in result.val.items() if k != "confusion"}
    return plain
