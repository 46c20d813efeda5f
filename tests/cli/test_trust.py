"""Files from elsewhere run no code and write nothing outside their run (docs/architecture.md, "What is trusted").

Each reader gets a crafted file: a checkpoint (`vl-eval`, `vl-predict`, `resume=`), a run folder's
`.hydra/overrides.yaml`, a sweep folder (`vl-report`), a sweep job's checkpoint (`-m resume=auto`),
a feature cache and a CIFAR batch. The payloads would write a marker file if anything ran them.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, TINY, VL_TRAIN, read_metrics, run_cli

BIN = Path(sys.executable).parent
EXAMPLE = REPO / "docs" / "examples" / "my_configs"


def write_text_payload(marker: Path) -> dict:
    return {
        "_target_": "pathlib.Path.write_text",
        "_args_": [{"_target_": "pathlib.Path", "_args_": [str(marker)]}, "x"],
    }


def crafted_configs(marker: Path) -> dict[str, tuple[str, object]]:
    """Where a payload goes in the stored config, and the key and target the refusal must name."""
    return {
        "pathlib at the top": ("loss", write_text_payload(marker)),
        "os.system inside _args_": (
            "loss",
            {
                "_target_": "torch.nn.CrossEntropyLoss",
                "weight": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
            },
        ),
        "a module in the current folder": ("model", {"_target_": "evilmod.Net"}),
        "shutil.copy": ("regularization", {"_target_": "shutil.copy", "_args_": ["/etc/hostname", str(marker)]}),
    }


NAMED = {
    "pathlib at the top": "loss._target_=pathlib.Path.write_text",
    "os.system inside _args_": "loss.weight._target_=os.system",
    "a module in the current folder": "model._target_=evilmod.Net",
    "shutil.copy": "regularization._target_=shutil.copy",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    result = run_cli([*TINY, "trainer.epochs=1"], run_dir)
    assert result.returncode == 0, result.stderr
    return run_dir


def crafted_checkpoint(source: Path, target: Path, change) -> Path:
    state = torch.load(source, weights_only=True)
    change(state["config"])
    torch.save(state, target)
    return target


def a_folder_with_a_module_that_writes_on_import(folder: Path, marker: Path) -> Path:
    """A user's working folder holding evilmod.py, which would write `marker` the moment it is imported."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evilmod.py").write_text(f"open({str(marker)!r}, 'w').write('imported')\nNet = None\n")
    return folder


def run(command: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{cwd}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}  # evilmod importable
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd, env=env, **kwargs)


def refused_in_one_line(result: subprocess.CompletedProcess, *named: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("case", list(NAMED))
def test_vl_eval_and_vl_predict_refuse_a_checkpoint_naming_an_unknown_target(trained, tmp_path, case):
    marker = tmp_path / "written"
    work = a_folder_with_a_module_that_writes_on_import(tmp_path / "work", marker)
    group, payload = crafted_configs(marker)[case]
    evil = crafted_checkpoint(trained / "last.pt", work / "evil.pt", lambda config: config.update({group: payload}))
    image = work / "cat.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 10, 10)).save(image)
    before = sorted(p.name for p in work.iterdir())

    refused_in_one_line(run([str(BIN / "vl-eval"), str(evil)], work), str(evil), NAMED[case], "nothing was imported")
    refused_in_one_line(run([str(BIN / "vl-predict"), str(evil), str(image)], work), str(evil), NAMED[case])

    assert not marker.exists()
    assert sorted(p.name for p in work.iterdir()) == before  # no eval json, no predictions.csv


def test_an_environment_resolver_in_a_stored_config_is_refused(trained, tmp_path):
    evil = crafted_checkpoint(
        trained / "last.pt", tmp_path / "env.pt", lambda config: config["dataset"].update(root="${oc.env:HOME}/.ssh")
    )
    line = refused_in_one_line(run([str(BIN / "vl-eval"), str(evil)], tmp_path), str(evil), "dataset.root=", "oc.env")
    assert "nothing was read" in line


def test_resume_refuses_a_crafted_checkpoint_before_writing_into_its_folder(trained, tmp_path):
    marker = tmp_path / "written"
    run_dir = tmp_path / "copied_run"
    shutil.copytree(trained, run_dir)
    (run_dir / "metrics.json").unlink()  # looks unfinished, so worth resuming
    crafted_checkpoint(
        run_dir / "last.pt", run_dir / "last.pt", lambda config: config.update(loss=write_text_payload(marker))
    )
    before = {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")}

    result = run([str(VL_TRAIN), f"resume={run_dir}"], tmp_path)

    refused_in_one_line(result, str(run_dir / "last.pt"), "loss._target_=pathlib.Path.write_text")
    assert not marker.exists()
    assert {p.relative_to(run_dir): p.stat().st_mtime_ns for p in run_dir.rglob("*")} == before


def test_resume_refuses_crafted_overrides_and_drops_stored_hydra_settings(trained, tmp_path):
    run_dir = tmp_path / "copied_run"
    shutil.copytree(trained, run_dir)
    (run_dir / "metrics.json").unlink()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    recorded = yaml.safe_load(overrides_file.read_text())
    overrides_file.write_text(yaml.safe_dump([*recorded, "+loss.weight._target_=webbrowser.open"]))

    refused_in_one_line(run([str(VL_TRAIN), f"resume={run_dir}"], tmp_path), str(overrides_file), "webbrowser.open")

    elsewhere = tmp_path / "elsewhere.log"  # a stored Hydra setting would send the log outside the run
    overrides_file.write_text(yaml.safe_dump([*recorded, f"hydra.job_logging.handlers.file.filename={elsewhere}"]))
    result = run([str(VL_TRAIN), f"resume={run_dir}"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert not elsewhere.exists()
    assert read_metrics(run_dir)["status"] == "completed"


def test_a_class_of_ones_own_is_built_when_the_command_names_its_configs(tmp_path):
    env = {"PYTHONPATH": f"{EXAMPLE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    run_dir = tmp_path / "run"
    result = run_cli(["--config-dir", str(EXAMPLE), "model=two_layer", *TINY, "trainer.epochs=1"], run_dir, env=env)
    assert result.returncode == 0, result.stderr
    eval_env = {**os.environ, **env}

    without = subprocess.run(
        [str(BIN / "vl-eval"), str(run_dir)], capture_output=True, text=True, env=eval_env, timeout=300
    )
    refused_in_one_line(without, "model._target_=mynets.TwoLayer", "--config-dir")

    with_dir = subprocess.run(
        [str(BIN / "vl-eval"), str(run_dir), "--config-dir", str(EXAMPLE)],
        capture_output=True,
        text=True,
        env=eval_env,
        timeout=300,
    )
    assert with_dir.returncode == 0, with_dir.stderr
    scored = json.loads((run_dir / "eval_last_test.json").read_text())
    assert scored["test/acc"] == pytest.approx(read_metrics(run_dir)["test/acc"])


def test_a_stored_config_never_chooses_where_to_write(tmp_path):
    """features.cache_dir and dataset.download name places outside the run: the reader's command decides them."""
    run_dir = tmp_path / "run"
    cache = tmp_path / "cache"
    result = run_cli(
        [*TINY, "trainer.epochs=1", "model=linear", "features=hog", f"features.cache_dir={cache}"], run_dir
    )
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    crafted_checkpoint(
        run_dir / "last.pt", run_dir / "last.pt", lambda config: config["features"].update(cache_dir=str(elsewhere))
    )

    scored = subprocess.run([str(BIN / "vl-eval"), str(run_dir)], capture_output=True, text=True, timeout=300)

    assert scored.returncode == 0, scored.stderr
    assert not elsewhere.exists()
    assert json.loads((run_dir / "eval_last_test.json").read_text())["test/acc"] == pytest.approx(
        read_metrics(run_dir)["test/acc"]
    )


def test_a_sweep_job_resuming_a_crafted_checkpoint_is_refused(trained, tmp_path):
    marker = tmp_path / "written"
    sweep = tmp_path / "sweep"
    job = sweep / "0"
    job.mkdir(parents=True)
    crafted_checkpoint(
        trained / "last.pt", job / "last.pt", lambda config: config.update(loss=write_text_payload(marker))
    )

    result = run([str(VL_TRAIN), "-m", "resume=auto", *TINY, f"hydra.sweep.dir={sweep}"], tmp_path)

    assert result.returncode != 0
    assert (
        f"{job / 'last.pt'}: loss._target_=pathlib.Path.write_text" in result.stderr + (job / "train.log").read_text()
    )
    assert "Traceback" not in result.stderr
    assert not marker.exists()


def test_vl_report_resolves_nothing_unsafe_in_a_sweep_folder(trained, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(trained, sweep / "0")
    secret = tmp_path / "secret.db"
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "sweeper": {"storage": "${oc.env:VL_TEST_SECRET}", "study_name": "s"},
                    "runtime": {"cwd": str(tmp_path)},
                },
            }
        )
    )

    result = subprocess.run(
        [str(BIN / "vl-report"), str(sweep)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "VL_TEST_SECRET": f"sqlite:///{secret}"},
    )

    assert result.returncode == 0, result.stderr
    assert "calls the resolver oc.env" in result.stdout + result.stderr
    assert not secret.exists()
    assert (sweep / "summary.csv").is_file()


class WritesOnLoad:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_a_crafted_feature_cache_is_recomputed_and_runs_nothing(tmp_path):
    cache = tmp_path / "cache"
    args = [*TINY, "trainer.epochs=1", "model=linear", "features=hog", f"features.cache_dir={cache}"]
    first = run_cli(args, tmp_path / "first")
    assert first.returncode == 0, first.stderr
    marker = tmp_path / "written"
    files = list(cache.glob("*.pt"))
    assert files
    for file in files:
        torch.save({"key": WritesOnLoad(marker)}, file)

    second = run_cli(args, tmp_path / "second")

    assert second.returncode == 0, second.stderr
    assert not marker.exists()
    assert "computing the features again" in (tmp_path / "second" / "train.log").read_text()
    assert read_metrics(tmp_path / "second")["test/acc"] == read_metrics(tmp_path / "first")["test/acc"]


def test_a_cifar_batch_that_names_a_callable_is_refused_unrun(tmp_path):
    from visionlab.data.cifar10 import read_batches
    from visionlab.errors import UserError

    marker = tmp_path / "written"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({"data": WritesOnLoad(marker), "labels": [0]}, f)
    with pytest.raises(UserError, match="data_batch_1 is corrupt .*WritesOnLoad|data_batch_1 is corrupt .*pathlib"):
        read_batches(tmp_path, ["data_batch_1"])
    assert not marker.exists()


def test_a_study_whose_enqueued_trial_does_not_fit_the_search_is_refused(tmp_path):
    import optuna

    search = tmp_path / "outputs" / "search" / "knn_optuna"
    search.mkdir(parents=True)
    study = optuna.create_study(
        study_name="knn_optuna", storage=f"sqlite:///{search / 'optuna.db'}", direction="maximize"
    )
    study.enqueue_trial({"model.k": "${oc.env:HOME}", "model.distance": "os.system", "model.weights": "uniform"})

    result = run(
        [str(VL_TRAIN), "-m", "hparams_search=knn_optuna", "model=knn", *TINY, "hydra.sweeper.n_trials=2"], tmp_path
    )

    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    # beside optuna's own "Using an existing study"
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "optuna.db: study knn_optuna's enqueued trial 0 sets model.k='${oc.env:HOME}'" in errors[0]
    assert "study_name" in errors[0]
    assert not list(search.glob("*/metrics.json"))  # no trial ran
