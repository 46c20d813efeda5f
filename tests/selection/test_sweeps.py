"""Multiruns through the real `vl-train -m`: grid sweeps, a failing job, Optuna with sqlite, launchers."""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.conftest import CONF_DIR, TINY, read_metrics, run_cli

NO_PICTURES = ["logging=none"]
KNN = [*TINY, *NO_PICTURES, "model=knn"]


def summary_rows(sweep: Path) -> list[dict[str, str]]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def hparams_of(run_dir: Path) -> tuple[dict, set[str]]:
    """The hyperparameters and metric tags a run shows in TensorBoard's HParams tab."""
    events = EventAccumulator(str(run_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {
        key: value.number_value if value.HasField("number_value") else value.string_value
        for key, value in start.hparams.items()
    }
    return values, {info.name.tag for info in experiment.metric_infos}


def test_grid_sweep_of_kfold_knn_writes_each_job_and_a_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *KNN, "model.k=1,3,5", "split=kfold", "split.folds=3", f"hydra.sweep.dir={sweep}"], sweep)
    assert result.returncode == 0, result.stderr

    accs = {k: read_metrics(sweep / str(job))["cv/val_acc_mean"] for job, k in enumerate((1, 3, 5))}
    rows = summary_rows(sweep)
    assert [row["model.k"] for row in rows] == [str(k) for k in sorted(accs, key=lambda k: -accs[k])]  # best first
    assert [row["best"] for row in rows] == ["1", "0", "0"]
    assert float(rows[0]["cv/val_acc_mean"]) == max(accs.values())
    assert "split" not in rows[0]  # the same in every job: not a column
    assert "3 runs under" in result.stdout and " ± " in result.stdout  # the table, printed by the Hydra callback

    values, metrics = hparams_of(sweep / "1")
    assert values["model.k"] == 3 and values["model"] == "knn" and values["split"] == "kfold"
    assert {"val/acc", "cv/val_acc_mean", "cv/val_acc_std"} <= metrics and "val/loss" not in metrics


def test_a_failing_job_does_not_lose_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", *KNN, "model.k=1,0,3", f"hydra.sweep.dir={sweep}"], sweep)
    assert result.returncode == 2  # the failed job's exit code: bad config
    assert "model.k=0 is invalid" in result.stderr
    assert read_metrics(sweep / "0")["status"] == "completed" and read_metrics(sweep / "2")["status"] == "completed"
    rows = summary_rows(sweep)
    assert [(row["model.k"], row["status"]) for row in rows][-1] == ("0", "failed")  # listed, last
    assert {row["model.k"] for row in rows[:2]} == {"1", "3"}
    assert "1 run(s) failed" in result.stdout


def test_optimizer_grid_from_the_issue_sweeps_six_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        *NO_PICTURES,
        "model=linear",
        "trainer.epochs=1",
        "optimizer=sgd,adam",
        "optimizer.lr=0.1,0.01,0.001",
        f"hydra.sweep.dir={sweep}",
    ]
    result = run_cli(args, sweep)
    assert result.returncode == 0, result.stderr
    rows = summary_rows(sweep)
    assert len(rows) == 6 and {(r["optimizer"], r["optimizer.lr"]) for r in rows} == {
        (o, lr) for o in ("sgd", "adam") for lr in ("0.1", "0.01", "0.001")
    }
    accs = [float(r["val/acc"]) for r in rows]
    assert accs == sorted(accs, reverse=True)


def test_optuna_search_with_sqlite_storage_resumes_a_stopped_study(tmp_path):
    """Two trials, then a launch that died in its third trial, then the same search again: it finishes the study."""
    search = tmp_path / "outputs" / "search" / "knn_optuna"
    args = ["-m", "hparams_search=knn_optuna", *KNN, "dataset.train_size=300"]
    first = run_cli([*args, "hydra.sweeper.n_trials=2"], tmp_path / "first")
    assert first.returncode == 0, first.stderr
    storage = f"sqlite:///{search / 'optuna.db'}"
    optuna.load_study(study_name="knn_optuna", storage=storage).ask()  # what a killed launch leaves: trial 2 running

    second = run_cli([*args, "hydra.sweeper.n_trials=3"], tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert "2 trials done (left running by a stopped launch, now failed: [2]), 1 to go" in second.stdout

    trials = optuna.load_study(study_name="knn_optuna", storage=storage).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"]
    # job N is trial N: nothing overwritten
    assert sorted(p.name for p in search.iterdir() if p.is_dir()) == ["0", "1", "3"]
    for number in (0, 1, 3):
        overrides = yaml.safe_load((search / str(number) / ".hydra" / "overrides.yaml").read_text())
        assert {f"{key}={value}" for key, value in trials[number].params.items()} <= set(overrides)
        assert read_metrics(search / str(number))["val/acc"] == pytest.approx(trials[number].value)
    rows = summary_rows(search)
    assert sorted(row["trial"] for row in rows) == ["0", "1", "2", "3"]  # every trial of the study, the failed one too
    assert [(row["trial"], row["status"], row["run_dir"]) for row in rows][-1] == ("2", "failed", "(not recorded)")


@pytest.fixture(scope="module")
def knn_study(tmp_path_factory) -> tuple[Path, Path]:
    """A kNN study of 2 trials, its jobs in old/0 and old/1: the sweep folder and the study's sqlite file."""
    root = tmp_path_factory.mktemp("study")
    old = root / "old"
    result = run_cli([*OPTUNA_KNN, "hydra.sweeper.n_trials=2", f"hydra.sweep.dir={old}"], root / "run")
    assert result.returncode == 0, result.stderr
    return old, old / "optuna.db"


OPTUNA_KNN = ["-m", "hparams_search=knn_optuna", *KNN, "dataset.train_size=300"]


def rerun(
    knn_study: tuple[Path, Path], tmp_path: Path, n_trials: int, other: list[str] = ()
) -> tuple[subprocess.CompletedProcess, Path, optuna.Study]:
    """The study's command again (with `other` overrides), on a copy of its storage, into a new sweep folder."""
    storage = f"sqlite:///{shutil.copy(knn_study[1], tmp_path / 'optuna.db')}"
    new = tmp_path / "new"
    args = [
        *OPTUNA_KNN,
        *other,
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweep.dir={new}",
        f"hydra.sweeper.storage={storage}",
    ]
    return run_cli(args, tmp_path / "run"), new, optuna.load_study(study_name="knn_optuna", storage=storage)


def test_a_complete_study_rerun_into_a_new_folder_writes_its_results(knn_study, tmp_path):
    old = knn_study[0]
    result, new, study = rerun(knn_study, tmp_path, n_trials=1)
    assert result.returncode == 0, result.stderr
    assert "study knn_optuna is complete: 2 trials done, none to go" in result.stdout
    assert not [p for p in new.iterdir() if p.is_dir()]  # no job ran
    best = study.best_trial
    results = yaml.safe_load((new / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(best.value) and results["best_params"] == best.params

    ranked = sorted(study.trials, key=lambda t: -t.value)
    assert [(row["trial"], row["run_dir"]) for row in summary_rows(new)] == [
        (str(t.number), str(old / str(t.number))) for t in ranked
    ]
    assert (
        f"best val/acc: {best.value:.4f} (trial {best.number} of study knn_optuna) in {old / str(best.number)}"
        in result.stdout
    )


def test_a_study_carried_on_in_a_new_folder_ranks_all_its_trials(knn_study, tmp_path):
    old = knn_study[0]
    result, new, study = rerun(knn_study, tmp_path, n_trials=3)
    assert result.returncode == 0, result.stderr
    assert "study knn_optuna: 2 trials done, 1 to go" in result.stdout
    assert sorted(p.name for p in new.iterdir() if p.is_dir()) == ["2"]

    rows = summary_rows(new)
    folders = {"0": str(old / "0"), "1": str(old / "1"), "2": "2"}  # the new trial's relative to the report's folder
    assert {row["trial"]: row["run_dir"] for row in rows} == folders
    values = {str(t.number): t.value for t in study.trials}
    assert [float(row["val/acc"]) for row in rows] == pytest.approx(sorted(values.values(), reverse=True))
    assert values[rows[0]["trial"]] == pytest.approx(study.best_value) and rows[0]["best"] == "1"
    best = study.best_trial
    where = new / "2" if best.number == 2 else old / str(best.number)
    assert f"best val/acc: {best.value:.4f} (trial {best.number} of study knn_optuna) in {where}" in result.stdout


def test_a_study_reused_with_other_settings_is_refused_in_one_line_and_the_new_study_it_names_starts(
    knn_study, tmp_path
):
    result, new, study = rerun(knn_study, tmp_path, 3, ["split=kfold", "split.folds=2"])
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: study knn_optuna in {storage} was searched with other settings: split=holdout there, kfold here; "
        "its trials cannot be compared with this search's. "
        "Start a new study: hydra.sweeper.study_name=knn_optuna_kfold (or search with the study's settings)"
    ]
    assert len(study.trials) == 2 and not new.exists(), "nothing ran, nothing was written"
    assert "runs under" not in result.stdout, "no report of the study that was not run"

    named = run_cli(
        [
            *OPTUNA_KNN,
            "split=kfold",
            "split.folds=2",
            "hydra.sweeper.n_trials=1",
            f"hydra.sweep.dir={new}",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=knn_optuna_kfold",
        ],
        tmp_path / "run",
    )
    assert named.returncode == 0, named.stderr
    assert "study knn_optuna_kfold: a new study of 1 trial (hydra.sweeper.n_trials)" in named.stdout
    assert re.search(
        r"\]\[HYDRA\] trial 0 \(1 of 1\): model\.distance=\w+ model\.k=\d+ model\.weights=\w+$", named.stdout, re.M
    )
    assert "Launching 1 jobs locally" not in named.stdout and "Launching 1 jobs locally" not in named.stdout
    assert "setup plugin alembic" not in named.stdout + named.stderr


def test_the_best_trial_is_retrained_by_the_command_the_search_writes(knn_study, tmp_path):
    result, new, study = rerun(knn_study, tmp_path, 2)
    assert result.returncode == 0, result.stderr
    command = (new / "best_command.txt").read_text().strip()
    assert f"retrain the best: {command} (also in {new / 'best_command.txt'})" in result.stdout
    words = shlex.split(command)
    assert words[0] == "vl-train" and "-m" not in words and "hparams_search=knn_optuna" in words
    assert {f"{key}={value}" for key, value in study.best_params.items()} <= set(words)
    again = run_cli(words[1:], tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert read_metrics(tmp_path / "again")["val/acc"] == pytest.approx(study.best_value)


def test_a_complete_study_whose_trials_all_failed_says_what_to_do(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="knn_optuna", storage=storage, direction="maximize")
    for _ in range(2):
        study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    result = run_cli(
        [
            *OPTUNA_KNN,
            "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={tmp_path / 'new'}",
            f"hydra.sweeper.storage={storage}",
        ],
        tmp_path / "run",
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: study knn_optuna in {storage} has 2 trials and none completed: raise hydra.sweeper.n_trials above 2, "
        "or start a new study with hydra.sweeper.study_name=..."
    )
    # the report still lists them
    assert [row["status"] for row in summary_rows(tmp_path / "new")] == ["failed", "failed"]


def test_joblib_runs_two_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *KNN, "model.k=1,3", f"hydra.sweep.dir={sweep}"]
    result = run_cli(args, sweep)
    assert result.returncode == 0, result.stderr
    pids = {job: event_file_pid(sweep / job) for job in ("0", "1")}
    assert pids["0"] != pids["1"], "each job ran in its own worker process"
    assert len(summary_rows(sweep)) == 2


def test_submitit_local_runs_two_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "hydra/launcher=submitit_local", *KNN, "model.k=1,3", f"hydra.sweep.dir={sweep}"], sweep)
    assert result.returncode == 0, result.stderr
    assert [read_metrics(sweep / job)["status"] for job in ("0", "1")] == ["completed", "completed"]
    assert any((sweep / ".submitit").iterdir())  # submitit's own job folders
    assert len(summary_rows(sweep)) == 2


def test_slurm_example_launcher_composes_with_its_cluster_settings():
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min, launcher.mem_gb) == ("gpu", 1, 120, 16)


def event_file_pid(run_dir: Path) -> int:
    """TensorBoard names its files events.out.tfevents.<time>.<host>.<pid>.<n>."""
    (name,) = [p.name for p in run_dir.glob("events.out.tfevents.*")]
    return int(re.match(r"events\.out\.tfevents\.\d+\..+\.(\d+)\.\d+$", name)[1])
