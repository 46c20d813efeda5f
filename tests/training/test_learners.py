"""Learners: each kind of model learns, is scored and pictured its own way, and the run never asks which
model it holds (docs/architecture.md, "Layers")."""

from __future__ import annotations

import re

import pytest
import torch

from tests.conftest import REPO, TINY, compose_train
from visionlab.experiment import build_components, fresh_model, prepare_data
from visionlab.training.learners import GradientLearner, KChoice, MemorizingLearner

SOURCE = REPO / "src" / "visionlab"
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "model, learner", [("knn", MemorizingLearner), ("linear", GradientLearner), ("cnn", GradientLearner)]
)
def test_the_model_class_declares_its_learner_and_the_run_reads_it_once(model, learner):
    components = build_components(compose_train([*TINY, f"model={model}"]))
    assert type(components.learner) is learner


def test_the_memorizing_learner_answers_for_its_model_and_the_gradient_learner_for_its_own():
    knn = build_components(compose_train([*TINY, "model=knn", "model.k=[1,3]"]))
    splits = prepare_data(knn, CPU)
    model = fresh_model(knn, splits, CPU)
    assert knn.learner.votes and knn.learner.scoring_loss() is None
    model.fit(splits.train)
    model.k = 3
    distances, nearest = knn.learner.neighbours(model)(splits.test.images[:2].float(), 3)
    assert nearest.shape == (2, 3) and knn.learner.voters(model) == 3
    linear = build_components(compose_train([*TINY, "model=linear"]))
    assert not linear.learner.votes and linear.learner.neighbours(model) is None
    assert linear.learner.scoring_loss() is linear.learner.loss_fn


def test_a_choice_of_k_keeps_the_best_and_on_a_tie_the_smaller_k():
    assert KChoice({1: 0.8, 3: 0.9, 5: 0.9}).best == 3
    assert KChoice.mean([KChoice({1: 0.8, 3: 0.7}), KChoice({1: 0.6, 3: 0.8})]).best == 3
    metrics = {"val/acc@1": 0.5, "val/acc@10": 0.7, "val/acc": 0.7, "cv/fold_0/val_acc@1": 0.4}
    assert KChoice.of(metrics) == KChoice({1: 0.5, 10: 0.7})
    assert KChoice.of({"val/acc": 0.7}) is None


def test_no_caller_asks_which_model_it_holds():
    """The kNN special cases live in its learner: nobody else probes for `neighbours`, counts trainable
    parameters to choose a path, or spells the `@k` metric names."""
    found = []
    for file in SOURCE.rglob("*.py"):
        text = file.read_text()
        relative = file.relative_to(SOURCE).as_posix()
        if re.search(r"getattr\([^)]*[\"']neighbours[\"']", text) or "count_trainable" in text:
            found.append(f"{relative}: probes the model")
        if relative != "training/learners/knn_choice.py" and re.search(r"acc@", text):
            found.append(f"{relative}: spells val/acc@k")
        if re.search(r"endswith\([\"']acc[\"']\)", text):
            found.append(f"{relative}: guesses the objective's direction")
    assert found == []
