"""`vl-report` and the sweep report it shares with the multirun callback, on hand-made run folders."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tests.conftest import CONF_DIR
from visionlab.errors import UserError
from visionlab.reporting.sweep_report import build_report, write_report

VL_REPORT = Path(sys.executable).parent / "vl-report"


def make_run(run_dir: Path, overrides: list[str], metrics: dict | None, objective: str = "val/acc") -> None:
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"objective": objective, "seed": 0}))
    if metrics is not None:
        (run_dir / "metrics.json").write_text(json.dumps({"status": "completed", **metrics}))


@pytest.fixture
def sweep(tmp_path) -> Path:
    """Jobs 0..10 in folders 0, 1, ..., 10: lr varies, model is the same; job 2 failed, job 10 diverged."""
    for job in range(11):
        lr = f"0.{job + 1:02d}"
        if job == 2:
            make_run(tmp_path / "2", ["model=mlp", f"optimizer.lr={lr}"], None)
        elif job == 10:
            make_run(
                tmp_path / "10",
                ["model=mlp", f"optimizer.lr={lr}"],
                {"status": "diverged", "val/acc": None, "val/loss": None},
            )
        else:
            make_run(
                tmp_path / str(job),
                ["model=mlp", f"optimizer.lr={lr}"],
                {"val/acc": job / 10, "val/loss": 2 - job / 10},
            )
    return tmp_path


def test_runs_are_ranked_by_the_objective_with_the_varied_overrides_as_columns(sweep):
    report = build_report(sweep)
    assert report.objective == "val/acc" and report.columns == ["optimizer.lr"]
    assert [run.run_dir.name for run in report.runs] == ["9", "8", "7", "6", "5", "4", "3", "1", "0", "2", "10"]
    assert report.best.run_dir.name == "9" and [run.run_dir.name for run in report.failed] == ["2"]
    assert report.runs[-1].status == "diverged"


def test_a_loss_objective_ranks_the_lowest_first(sweep):
    report = build_report(sweep, "val/loss")
    assert [run.run_dir.name for run in report.runs][:2] == ["9", "8"]
    assert report.value(report.best) == pytest.approx(1.1)


def test_summary_csv_marks_the_best_and_keeps_every_metric(sweep, capsys):
    write_report(sweep)
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["run_dir"] for row in rows][:2] == ["9", "8"]
    assert [row["best"] for row in rows].count("1") == 1 and rows[0]["best"] == "1"
    assert rows[0]["optimizer.lr"] == "0.10" and rows[0]["val/acc"] == "0.9" and rows[0]["val/loss"] == "1.1"
    assert (rows[-2]["status"], rows[-2]["val/acc"]) == ("failed", "")
    out = capsys.readouterr().out
    assert "11 runs under" in out and "best val/acc: 0.9000" in out and "1 run(s) failed" in out


def test_runs_with_different_objectives_need_one_named(tmp_path):
    make_run(tmp_path / "a", ["objective=val/acc"], {"val/acc": 0.5})
    make_run(tmp_path / "b", ["objective=val/loss"], {"val/loss": 0.7}, objective="val/loss")
    with pytest.raises(UserError, match="different objectives .*--objective"):
        build_report(tmp_path)
    assert build_report(tmp_path, "val/acc").best.run_dir.name == "a"


def test_an_objective_with_no_known_direction_is_refused_not_guessed(tmp_path):
    """A run folder from elsewhere may name any objective: which way is better is known, never read off the name."""
    make_run(tmp_path / "a", [], {"val/f1": 0.5}, objective="val/f1")
    make_run(tmp_path / "b", [], {"val/f1": 0.7}, objective="val/f1")
    with pytest.raises(UserError, match=r"judged by val/f1, which is none of val/acc, val/loss, .*--objective$"):
        build_report(tmp_path)
    make_run(tmp_path / "c", [], {"val/loss": 0.2, "val/f1": 0.1}, objective="val/f1")
    assert build_report(tmp_path, "val/loss").best.run_dir.name == "c"


def test_vl_report_prints_the_table_and_fails_in_one_line(sweep, tmp_path):
    result = subprocess.run(
        [str(VL_REPORT), str(sweep), "--objective", "val/loss"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "best val/loss: 1.1000" in result.stdout and (sweep / "summary.csv").is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([str(VL_REPORT), str(empty)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {empty} holds no runs: no metrics.json and no .hydra/ below it"


# optuna's create_trial and add_trial, which make the trials by hand
@pytest.mark.filterwarnings("ignore:.* is experimental")
def test_vl_report_of_an_optuna_sweep_ranks_every_trial_of_its_study_wherever_it_ran(tmp_path):
    """Trial 0 ran in another folder; trial 1 recorded no folder but is job 1 here; trial 2's folder is
    gone; trial 3 failed without one. Job 7 is a run of no trial."""
    import optuna
    from optuna.distributions import IntUniformDistribution
    from optuna.trial import TrialState, create_trial

    old, sweep = tmp_path / "old", tmp_path / "sweep"
    make_run(old / "0", ["model=knn", "model.k=3"], {"val/acc": 0.5})
    make_run(sweep / "1", ["model=knn", "model.k=5"], {"val/acc": 0.7})
    (sweep / "1" / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"sweeper": {"study_name": "S"}, "job": {"num": 1}}})
    )
    make_run(sweep / "7", ["model=knn", "model.k=9"], {"val/acc": 0.6})
    # the multirun.yaml of a search run as users run it: Hydra stores it unresolved, hydra.run.dir's
    # ${new_folder:...} and the help text's resolvers included, which the report must not need to resolve
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        composed = compose(config_name="train", overrides=["hparams_search=knn_optuna"], return_hydra_config=True)
    config = OmegaConf.to_container(composed, resolve=False)
    config["objective"] = "val/acc"
    config["hydra"]["sweep"]["dir"] = "multirun/${now:%H-%M-%S}"
    config["hydra"]["runtime"]["cwd"] = "/nowhere"
    config["hydra"]["sweeper"].update(storage="sqlite:///${hydra.sweep.dir}/optuna.db", study_name="S")
    assert "${new_folder:" in config["hydra"]["run"]["dir"]
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(config))
    study = optuna.create_study(study_name="S", storage=f"sqlite:///{sweep / 'optuna.db'}", direction="maximize")
    k = {"model.k": IntUniformDistribution(1, 15)}
    for _number, (state, value, k_value, run_dir) in enumerate(
        [
            (TrialState.COMPLETE, 0.5, 3, old / "0"),
            (TrialState.COMPLETE, 0.7, 5, None),
            (TrialState.COMPLETE, 0.9, 7, tmp_path / "gone" / "2"),
            (TrialState.FAIL, None, 11, None),
        ]
    ):
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"model.k": k_value},
                distributions=k,
                user_attrs={} if run_dir is None else {"run_dir": str(run_dir)},
            )
        )

    result = subprocess.run([str(VL_REPORT), str(sweep)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(row["trial"], row["model.k"], row["val/acc"], row["status"], row["run_dir"]) for row in rows] == [
        ("2", "7", "0.9", "completed", f"{tmp_path / 'gone' / '2'} (missing)"),
        ("1", "5", "0.7", "completed", "1"),
        ("", "9", "0.6", "completed", "7"),
        ("0", "3", "0.5", "completed", str(old / "0")),
        ("3", "11", "", "failed", "(not recorded)"),
    ]
    assert "model" not in rows[0]  # knn in every folder; the trials without one know only their params
    assert "5 runs: the trials of Optuna study S and the runs under" in result.stdout
    assert f"best val/acc: 0.9000 (trial 2 of study S) in {tmp_path / 'gone' / '2'} (missing)" in result.stdout
    assert "failed before writing metrics.json" not in result.stdout  # trial 3 has no train.log to point at
