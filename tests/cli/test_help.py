"""First contact: `vl-train --help` says what the tool is and how to start;
Hydra's completion still works through it."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import CONF_DIR, VL_TRAIN

VL_EVAL, VL_PREDICT = VL_TRAIN.with_name("vl-eval"), VL_TRAIN.with_name("vl-predict")


def test_help_says_what_it_does_shows_examples_and_lists_every_group(tmp_path):
    result = subprocess.run([str(VL_TRAIN), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("vl-train: train an image classifier")
    assert "powered by Hydra" not in result.stdout
    for example in ("vl-train dataset=mnist model=cnn", "split=kfold", "resume=", "--cfg job"):
        assert example in result.stdout
    for group in ("model", "optimizer", "features", "recipe"):  # every option in conf/, a new one included
        options = ", ".join(sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml")))
        assert f"{group}: {options}" in result.stdout


def test_shell_completion_answers_through_vl_train(tmp_path):
    """`eval "$(vl-train -sc install=bash)"` makes bash ask `vl-train -sc query=bash` with COMP_LINE set."""
    installed = subprocess.run(
        [str(VL_TRAIN), "-sc", "install=bash"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert installed.returncode == 0 and "complete" in installed.stdout
    query = subprocess.run(
        [str(VL_TRAIN), "-sc", "query=bash"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, "COMP_LINE": "vl-train model="},
    )
    assert query.returncode == 0
    assert {"model=cnn", "model=knn", "model=mlp"} <= set(query.stdout.split())


def test_eval_and_predict_help_say_what_they_score_write_and_how_to_choose_the_checkpoint(tmp_path):
    evaluate = subprocess.run([str(VL_EVAL), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
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
    predict = subprocess.run([str(VL_PREDICT), "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert predict.returncode == 0
    for said in ("IMAGE_OR_FOLDER|key=value", "predictions.csv", "predictions.png", "best.pt", "last.pt"):
        assert said in predict.stdout, said
