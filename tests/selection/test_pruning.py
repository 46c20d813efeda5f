"""Pruned Optuna searches: real `vl-train -m hparams_search=...` sweeps, and the job's side
(`TrialPruning`) on a real study."""

from __future__ import annotations

import csv
import re
import statistics
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import TrialState

from tests.conftest import CONF_DIR, TINY, read_metrics, run_cli
from tests.selection.test_sweeps import NO_PICTURES, event_file_pid
from visionlab.trial_pruning import TrialPruning

MLP_SEARCH = [
    "-m",
    "hparams_search=mlp_optuna",
    *TINY,
    *NO_PICTURES,
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
]
STATUS = {TrialState.COMPLETE: "completed", TrialState.PRUNED: "pruned"}


def study_of(search: Path) -> optuna.Study:
    return optuna.load_study(study_name="mlp_optuna", storage=f"sqlite:///{search / 'optuna.db'}")


def check_trials(study: optuna.Study, search: Path, epochs: int) -> list[int]:
    """Each trial's run agrees with the study: status, epochs reported, run directory; a pruned one was below
    the median of the trials completed before it, at the epoch it stopped. Returns the pruned trials' numbers."""
    with open(search / "summary.csv") as f:
        report = {int(row["trial"]): row["status"] for row in csv.DictReader(f)}
    pruned = []
    for trial in study.trials:
        metrics = read_metrics(search / str(trial.number))
        assert (metrics["status"], report[trial.number]) == (STATUS[trial.state],) * 2
        assert trial.user_attrs["run_dir"] == str(search / str(trial.number))
        if trial.state == TrialState.COMPLETE:
            assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
            assert metrics["test/acc"] is not None
            continue
        pruned.append(trial.number)
        stopped = max(trial.intermediate_values)
        assert metrics["epochs"] == stopped < epochs and metrics["test/acc"] is None
        assert trial.value == pytest.approx(metrics["val/acc"]) == pytest.approx(trial.intermediate_values[stopped])
        earlier = [
            t.intermediate_values[stopped]
            for t in study.trials
            if t.state == TrialState.COMPLETE and t.datetime_complete < trial.datetime_complete
        ]
        assert max(trial.intermediate_values.values()) < statistics.median(earlier)
    return pruned


def test_a_search_prunes_trials_below_the_median_and_a_resumed_study_goes_on_pruning(tmp_path):
    search = tmp_path / "outputs" / "search" / "mlp_optuna"
    first = run_cli([*MLP_SEARCH, "hydra.sweeper.n_trials=2"], tmp_path / "first")
    assert first.returncode == 0, first.stderr
    assert [t.state for t in study_of(search).trials] == [TrialState.COMPLETE] * 2  # the pruner's 2 startup trials

    # The resumed sampler draws afresh (it is reseeded, so as not to repeat the first launch's trials): 6 random
    # trials, each about as likely to be above the median as below it, so that at least one is pruned
    second = run_cli([*MLP_SEARCH, "hydra.sweeper.n_trials=8"], tmp_path / "second")
    assert second.returncode == 0, second.stderr
    assert "study mlp_optuna: 2 trials done, 6 to go" in second.stdout
    said = re.findall(
        r"\]\[HYDRA\] trial (\d) \((\d) of 8(, about \d+ (?:s|min) left in the search)?\): model\.hidden=",
        second.stdout,
    )
    assert [(number, count) for number, count, _ in said] == [(str(n), str(n + 1)) for n in range(2, 8)]
    assert not said[0][2] and all(left for _, _, left in said[1:]), (
        "the time left, once a trial of this launch has ended"
    )
    assert "Launching 1 jobs locally" not in second.stdout and "setup plugin" not in second.stdout
    study = study_of(search)
    pruned = check_trials(study, search, epochs=2)
    assert pruned and min(pruned) >= 2  # judged against the first launch's trials, read from the storage
    for number in pruned:
        assert f"trial {number} was pruned by its job" in second.stdout
        # the report shows the value it was pruned at (after the completed trials: only those are ranked)
        assert re.search(rf"│\s+{number} │.*│\s+{study.trials[number].value:.4f} │ pruned\s+│", second.stdout), (
            second.stdout
        )
        assert (
            f"pruned by MedianPruner after epoch {max(study.trials[number].intermediate_values)}: trial {number}"
            in (search / str(number) / "train.log").read_text()
        )
    assert [t.number for t in study.trials] == list(range(8))


def test_parallel_joblib_trials_report_through_the_storage(tmp_path):
    search = tmp_path / "outputs" / "search" / "mlp_optuna"
    args = [
        *MLP_SEARCH,
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.n_jobs=2",
        "hydra.sweeper.n_trials=6",
    ]
    result = run_cli(args, tmp_path / "run")
    assert result.returncode == 0, result.stderr
    study = study_of(search)
    assert check_trials(study, search, epochs=2)
    assert event_file_pid(search / "2") != event_file_pid(search / "3")  # a batch of two trials ran in two processes


@pytest.mark.parametrize(
    "option, pruner",
    [
        ("median", optuna.pruners.MedianPruner),
        ("none", optuna.pruners.NopPruner),
        ("successive_halving", optuna.pruners.SuccessiveHalvingPruner),
    ],
)
def test_every_pruner_option_builds_and_only_a_trial_of_a_pruning_search_reports(option, pruner):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        search = compose(
            config_name="train",
            overrides=["hparams_search=mlp_optuna", f"hydra/sweeper/pruner={option}"],
            return_hydra_config=True,
        ).hydra
        grid = compose(config_name="train", return_hydra_config=True).hydra  # the basic sweeper of a grid sweep
    assert isinstance(instantiate(search.sweeper.pruner), pruner)
    search.runtime.output_dir = "/somewhere"
    assert not TrialPruning.from_config(search).active  # the sweep's own config: no trial yet
    search.sweeper.trial = 3
    assert TrialPruning.from_config(search).active == (option != "none")
    assert not TrialPruning.from_config(grid).active


MEDIAN = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})


def two_trials_done(tmp_path: Path, step: int) -> tuple[str, optuna.Study]:
    """A study in SQLite whose two finished trials (0.8 and 0.9) reported `step`: the median pruner's start."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="S", storage=storage, direction="maximize")
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, step=step)
        study.tell(trial, value)
    return storage, study


def test_the_median_pruner_stops_a_trial_below_the_median_and_marks_it_pruned(tmp_path):
    storage, study = two_trials_done(tmp_path, step=1)
    bad, good = study.ask().number, study.ask().number

    assert TrialPruning(storage, "S", bad, MEDIAN, run_dir="/runs/2").after_epoch(1, 0.5) is True
    keeps = TrialPruning(storage, "S", good, MEDIAN, run_dir="/runs/3")
    assert keeps.after_epoch(1, 0.95) is False
    assert keeps.after_epoch(1, 0.1) is False  # epoch 1 again (a resumed run): its first report stands
    trials = optuna.load_study(study_name="S", storage=storage).trials
    assert (trials[bad].state, trials[bad].value, trials[bad].user_attrs) == (
        TrialState.PRUNED,
        0.5,
        {"run_dir": "/runs/2"},
    )
    assert (trials[good].state, trials[good].intermediate_values) == (TrialState.RUNNING, {1: 0.95})

    study.tell(good, state=TrialState.FAIL)  # what a later launch does to a trial left running
    assert keeps.after_epoch(2, 0.1) is False
    assert optuna.load_study(study_name="S", storage=storage).trials[good].intermediate_values == {1: 0.95}


def test_the_last_epoch_is_reported_but_never_pruned(tmp_path):
    """Pruning after the run's last epoch would save nothing and lose its test: the value is reported, the
    trial goes on to its test (training/ReportToTrial passes may_prune=False there)."""
    storage, study = two_trials_done(tmp_path, step=2)
    below = study.ask().number
    last = TrialPruning(storage, "S", below, MEDIAN, run_dir="/runs/2")
    assert last.after_epoch(2, 0.1, may_prune=False) is False
    trial = optuna.load_study(study_name="S", storage=storage).trials[below]
    assert (trial.state, trial.intermediate_values) == (TrialState.RUNNING, {2: 0.1})


def test_a_run_outside_a_search_never_imports_optuna():
    code = (
        "import sys; from visionlab.trial_pruning import TrialPruning; p = TrialPruning.from_config();"
        "print(p.active, p.after_epoch(1, 0.5), 'optuna' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False", "False"], done.stderr


def test_a_bad_pruner_setting_stops_the_search_in_one_line_before_any_trial(tmp_path):
    result = run_cli(
        [*MLP_SEARCH, "hydra.sweeper.pruner.n_startup_trials=-1", f"hydra.sweep.dir={tmp_path / 'search'}"],
        tmp_path / "run",
    )
    assert result.returncode == 2
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert "MedianPruner" in line and "got -1" in line and line.endswith("full_key: hydra.sweeper.pruner")
    assert not (tmp_path / "search" / "0").exists()
