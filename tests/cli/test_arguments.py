"""vl-train's arguments as users write them: Hydra's options anywhere,
and a misspelled name met with the closest one."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import REPO, TINY, VL_TRAIN, compose_train, read_metrics, run_cli
from visionlab.launch import options_first

EXAMPLE = REPO / "docs" / "examples" / "my_configs"

# Misspellings none of the code was written against: (the arguments, what the one line must suggest).
MISSPELLED = [
    (["trainer.epcohs=3"], "did you mean trainer.epochs=3?"),  # transposed letters
    (["trainer.bach_size=32"], "did you mean trainer.batch_size=32?"),  # a missing letter
    (["dataset.trian_size=100"], "did you mean dataset.train_size=100?"),
    (["trainer.early_stopping.patiance=2"], "did you mean trainer.early_stopping.patience=2?"),  # a nested key
    (["model=knn", "model.distanse=l1"], "did you mean model.distance=l1?"),  # a key only the chosen option has
    (["Trainer.epochs=3"], "did you mean trainer.epochs=3?"),  # another case
    (["optimzer=adam"], "did you mean optimizer=adam?"),  # a group
    (["sheduler=cosine"], "did you mean scheduler=cosine?"),
    (["optimizer=adma"], "did you mean optimizer=adam?"),  # an option of a group
    (["model=resnet_smal"], "did you mean model=resnet_small?"),
    (["experiment=cifar10_lineer"], "did you mean experiment=cifar10_linear?"),
    (["~trainer.epcohs"], "did you mean ~trainer.epochs?"),
]


@pytest.mark.parametrize("args,suggestion", MISSPELLED, ids=[" ".join(a) for a, _ in MISSPELLED])
def test_a_misspelled_key_group_or_option_gets_the_closest_that_exists(tmp_path, args, suggestion):
    result = run_cli(args, tmp_path / "run")
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert suggestion in line, line
    assert not (tmp_path / "run").exists(), "refused before Hydra made the run directory"


def test_a_name_close_to_nothing_gets_no_guess(tmp_path):
    result = run_cli(["xyzzy=1"], tmp_path / "run")
    assert result.returncode == 2
    assert "xyzzy is not a key of the config: check its spelling against conf/" in result.stderr
    assert "did you mean" not in result.stderr


def test_an_own_config_dir_is_searched_for_the_closest_option(tmp_path):
    env = {"PYTHONPATH": f"{EXAMPLE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    result = run_cli(["--config-dir", str(EXAMPLE), "model=two_layer", "model.widht=3"], tmp_path / "run", env=env)
    assert result.returncode == 2 and "did you mean model.width=3?" in result.stderr
    result = run_cli(["experiment=quik", "--config-dir", str(EXAMPLE)], tmp_path / "run", env=env)
    assert result.returncode == 2 and "did you mean experiment=quick?" in result.stderr


def test_a_group_of_an_experiment_swaps_on_the_command_line_with_the_options_own_defaults(tmp_path):
    """experiment=cifar10_fast scheduler=piecewise exited 2 (scheduler.pct_start is not an argument of piecewise)
    while the experiment set onecycle's keys at its top level; an experiment's settings of a group are its option
    of that group now (optimizer=cifar10_fast/momentum), which optimizer=adamw replaces whole, while the experiment's
    other groups stay its own (tests/test_configs.py checks every experiment with every option). summary_only on a
    few synthetic colour images: nothing trains."""
    run_dir = tmp_path / "run"
    colour = ["dataset=synthetic", "dataset.shape=[3,32,32]", "dataset.train_size=100", "dataset.test_size=20"]
    cpu = ["trainer.device=cpu", "trainer.threads=1"]
    result = run_cli(["experiment=cifar10_fast", "optimizer=adamw", "summary_only=true", *colour, *cpu], run_dir)
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert config["optimizer"] == OmegaConf.to_container(compose_train(["optimizer=adamw"]).optimizer)
    assert config["loss"]["label_smoothing"] == 0.2 and config["model"]["whiten_images"] == 5000  # cifar10_fast's
    assert "Airbench" in (run_dir / "summary.md").read_text()


def test_a_missing_option_under_an_experiments_name_is_named_as_an_option_of_its_group(tmp_path):
    """Hydra names optimizer=cifar10_fast/adam's file optimizer/cifar10_fast/adam, which split at its last slash
    read as an option adam of a group optimizer/cifar10_fast, whose options were said to be optimizer's."""
    result = run_cli(["optimizer=cifar10_fast/adam"], tmp_path / "run")
    assert result.returncode == 2
    assert "optimizer=cifar10_fast/adam is not an option of conf/optimizer/: use one of adagrad, adam," in result.stderr


def test_hydra_options_go_before_the_overrides_with_their_values():
    assert options_first(["model=cnn", "-m", "optimizer.lr=0.1,0.01"]) == ["-m", "model=cnn", "optimizer.lr=0.1,0.01"]
    assert options_first(["hydra.run.dir=X", "--config-dir", "~/c", "experiment=mine"]) == [
        "--config-dir",
        "~/c",
        "hydra.run.dir=X",
        "experiment=mine",
    ]
    assert options_first(["a=1", "-cd=/c", "-cn", "other", "b=2", "--cfg", "job"]) == [
        "-cd=/c",
        "-cn",
        "other",
        "--cfg",
        "job",
        "a=1",
        "b=2",
    ]
    assert options_first(["a=1", "--info", "defaults", "b=2"]) == ["--info", "defaults", "a=1", "b=2"]
    assert options_first(["--info", "a=1", "b=2"]) == ["a=1", "b=2", "--info"], "--info's value is optional"
    assert options_first(["a=1", "--experimental-rerun", "x.pickle"]) == ["--experimental-rerun", "x.pickle", "a=1"]


def test_a_sweep_option_after_an_override_runs_the_sweep(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            str(VL_TRAIN),
            *TINY,
            "model=linear",
            "trainer.epochs=1",
            "-m",
            "optimizer.lr=0.1,0.01",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert [read_metrics(sweep / job)["status"] for job in ("0", "1")] == ["completed", "completed"]


def test_a_config_dir_after_an_override_is_searched(tmp_path):
    env = {"PYTHONPATH": f"{EXAMPLE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [
            str(VL_TRAIN),
            f"hydra.run.dir={run_dir}",
            "--config-dir",
            str(EXAMPLE),
            "experiment=quick",
            "trainer.threads=1",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    assert (
        read_metrics(run_dir)["status"] == "completed" and "model: TwoLayer with" in (run_dir / "train.log").read_text()
    )
