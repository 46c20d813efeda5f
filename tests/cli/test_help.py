"""First contact: `vl-train --help` says what the tool is and how to start;
Hydra's completion still works through it."""

from __future__ import annotations

import re

from tests.conftest import CONF_DIR, run_tool


def test_help_says_what_it_does_shows_examples_and_lists_every_group(tmp_path):
    result = run_tool("vl-train", ["--help"], tmp_path, timeout=60)
    assert result.returncode == 0
    assert result.stdout.startswith("vl-train: train an image classifier")
    assert "powered by Hydra" not in result.stdout
    for example in ("vl-train dataset=mnist model=cnn", "split=kfold", "resume=", "--cfg job"):
        assert example in result.stdout
    for group in ("model", "optimizer", "features", "recipe"):  # every option in conf/, a new one included
        options = ", ".join(sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml")))
        assert f"{group}: {options}" in result.stdout
    # an experiment's own options of a group (conf/optimizer/cifar10_fast/momentum.yaml) are not groups to choose
    # from: Hydra would list each as one (optimizer/cifar10_fast: momentum), the help says once how they are chosen
    experiments = "|".join(path.stem for path in (CONF_DIR / "experiment").glob("*.yaml"))
    assert not [line for line in result.stdout.splitlines() if re.match(rf"\S+/({experiments}): ", line)]
    assert "experiment=cifar10_fast chooses optimizer=cifar10_fast/momentum" in " ".join(result.stdout.split())
    assert "model=torchvision model.name= takes any of torchvision's classifiers:" in result.stdout
    assert "resnet18, resnet34" in result.stdout and "mobilenet_v3_small" in result.stdout


def test_shell_completion_answers_through_vl_train(tmp_path):
    """`eval "$(vl-train -sc install=bash)"` makes bash ask `vl-train -sc query=bash` with COMP_LINE set."""
    installed = run_tool("vl-train", ["-sc", "install=bash"], tmp_path, timeout=60)
    assert installed.returncode == 0 and "complete" in installed.stdout
    query = run_tool("vl-train", ["-sc", "query=bash"], tmp_path, timeout=60, env={"COMP_LINE": "vl-train model="})
    assert query.returncode == 0
    assert {"model=cnn", "model=knn", "model=mlp"} <= set(query.stdout.split())


def test_eval_and_predict_help_say_what_they_score_write_and_how_to_choose_the_checkpoint(tmp_path):
    evaluate = run_tool("vl-eval", ["--help"], tmp_path, timeout=60)
    assert evaluate.returncode == 0
    for said in (
        "accuracy, mean loss, per-class accuracy and the confusion matrix",
        "eval_<checkpoint>_<split>.json",
        "best.pt (its best epoch",
        "last.pt (its last epoch)",
        "--checkpoint last|best",
        "split=",
        "key=value",
        "--config-dir",
    ):
        assert said in evaluate.stdout, said
    predict = run_tool("vl-predict", ["--help"], tmp_path, timeout=60)
    assert predict.returncode == 0
    for said in ("IMAGE_OR_FOLDER|key=value", "predictions.csv", "predictions.png", "best.pt", "last.pt"):
        assert said in predict.stdout, said
