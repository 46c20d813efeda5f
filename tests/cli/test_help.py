"""First contact: `vl-train --help` says what the tool is and how to start; Hydra's completion still works through it."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import CONF_DIR, VL_TRAIN


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
    installed = subprocess.run([str(VL_TRAIN), "-sc", "install=bash"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert installed.returncode == 0 and "complete" in installed.stdout
    query = subprocess.run([str(VL_TRAIN), "-sc", "query=bash"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                           env={**os.environ, "COMP_LINE": "vl-train model="})
    assert query.returncode == 0
    assert {"model=cnn", "model=knn", "model=mlp"} <= set(query.stdout.split())
