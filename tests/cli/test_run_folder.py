"""A run folder belongs to one run (docs/architecture.md, "Run directory"): real `vl-train` processes
aimed at one folder, a run killed while it holds one, default folders claimed in the same second,
a folder that cannot be written."""

from __future__ import annotations

import datetime
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, VL_TRAIN, read_metrics, run_cli, wait_for_position
from tests.selection.test_sweeps import KNN

LINEAR = [*TINY, "model=linear"]


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(VL_TRAIN), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def holder_of(run_dir: Path, process: subprocess.Popen, timeout: float = 120) -> dict:
    """The lock file's record once the run has taken its folder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before taking its folder"
        try:
            return json.loads((run_dir / ".lock").read_text())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError(f"the run did not take {run_dir} within {timeout} s")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refusal(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    return line


def test_a_run_into_a_folder_in_use_is_refused_and_writes_nothing_there(tmp_path):
    run_dir = tmp_path / "run"
    first = start([*LINEAR, "seed=0", f"hydra.run.dir={run_dir}"], tmp_path)
    record = holder_of(run_dir, first)
    first.send_signal(signal.SIGSTOP)  # it holds its folder, wherever it is in its run: the second meets it there
    before = snapshot(run_dir)
    line = refusal(run_cli([*LINEAR, "seed=1"], run_dir))
    after = snapshot(run_dir)  # before the first carries on: it may have been stopped halfway through writing .hydra/
    first.send_signal(signal.SIGCONT)
    assert line.startswith(f"error: {run_dir} is in use by pid {first.pid} on {record['host']} (vl-train ")
    assert "seed=0" in line and f"started {record['started']}" in line and line.endswith("choose another hydra.run.dir")
    assert after == before, "the refused run wrote into the folder"
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 0, stderr
    assert "seed=0" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert "seed=1" not in (run_dir / "train.log").read_text() and "error" not in (run_dir / "train.log").read_text()

    finished = snapshot(run_dir)
    line = refusal(run_cli([*LINEAR, "seed=1"], run_dir))
    assert line == (
        f"error: {run_dir} holds a completed run (metrics.json): choose another hydra.run.dir, "
        "or delete the folder to start over; resume= carries on an interrupted run"
    )
    assert snapshot(run_dir) == finished


def test_a_killed_run_leaves_no_lock_behind_and_its_folder_is_for_resume_only(tmp_path):
    run_dir = tmp_path / "run"
    process = start([*LINEAR, "trainer.epochs=3", f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_position(run_dir, process, lambda at: True)
    process.send_signal(signal.SIGSTOP)
    resumed_too_soon = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    process.kill()
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert f"is in use by pid {process.pid}" in refusal(resumed_too_soon), "resuming a run that is still running"

    line = refusal(run_cli(LINEAR, run_dir))
    assert line == (
        f"error: {run_dir} holds a stopped run (last.pt): carry it on with resume={run_dir}, "
        "or choose another hydra.run.dir"
    )
    resumed = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert read_metrics(run_dir)["status"] == "completed" and read_metrics(run_dir)["epochs"] == 3


def take_the_next_minute(root: Path) -> None:
    """The default folder of every second of the next minute exists already: a run started now must add a suffix."""
    now = datetime.datetime.now()
    for second in range(60):
        at = now + datetime.timedelta(seconds=second)
        (root / f"{at:%Y-%m-%d}" / f"{at:%H-%M-%S}").mkdir(parents=True, exist_ok=True)


def test_runs_and_sweeps_started_in_the_same_second_get_folders_of_their_own(tmp_path):
    take_the_next_minute(tmp_path / "outputs")
    take_the_next_minute(tmp_path / "outputs" / "multirun")
    started = [start([*KNN, f"seed={seed}"], tmp_path) for seed in (1, 2)]
    started += [start(["-m", *KNN, f"seed={seed}"], tmp_path) for seed in (3, 4)]
    for process in started:
        _, stderr = process.communicate(timeout=240)
        assert process.returncode == 0, stderr

    runs = [p.parent for p in (tmp_path / "outputs").glob("*/*/metrics.json")]
    jobs = [p.parent for p in (tmp_path / "outputs" / "multirun").glob("*/*/0/metrics.json")]
    folders = [*runs, *(job.parent for job in jobs)]
    assert len(runs) == 2 and len(jobs) == 2
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d-\d+", folder.name) for folder in folders), folders
    overrides = [(folder / ".hydra" / "overrides.yaml").read_text() for folder in runs + jobs]
    seeds = sorted(re.search(r"seed=(\d)", text)[1] for text in overrides)
    assert seeds == ["1", "2", "3", "4"], "each run in a folder of its own"

    again = run_cli(["-m", *KNN, "seed=3", f"hydra.sweep.dir={jobs[0].parent}"], tmp_path / "again")
    line = refusal(again)
    assert line.startswith(f"error: {jobs[0]} holds a completed run (metrics.json): choose another hydra.sweep.dir")


def test_a_sweep_with_resume_auto_carries_on_a_stopped_job_in_its_folder(tmp_path):
    """What a requeued SLURM job does (tests/slurm): the job's folder holds its last.pt, and resume=auto takes it."""
    sweep = tmp_path / "sweep"
    args = ["-m", *LINEAR, "trainer.epochs=3", "resume=auto", f"hydra.sweep.dir={sweep}"]
    process = start(args, tmp_path)
    wait_for_position(sweep / "0", process, lambda at: True)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 143
    assert read_metrics(sweep / "0")["status"] == "interrupted"

    again = run_cli(args, tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert "resuming from" in (sweep / "0" / "train.log").read_text()
    assert read_metrics(sweep / "0")["status"] == "completed" and read_metrics(sweep / "0")["epochs"] == 3


def test_a_folder_that_cannot_be_written_is_refused_in_one_line(tmp_path):
    writable, run_dir = tmp_path / "writable", tmp_path / "read-only"
    writable.mkdir()
    run_dir.mkdir()
    mount = ["mount", "--bind", "-o", "ro", str(writable), str(run_dir)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"a read-only bind mount is not permitted here: {mounted.stderr.strip()}")
    try:
        line = refusal(run_cli(LINEAR, run_dir))
    finally:
        subprocess.run(["umount", str(run_dir)], check=True)
    assert line == (
        f"error: cannot write {run_dir} (Read-only file system): choose another folder, e.g. hydra.run.dir=/tmp/run"
    )
    assert not any(writable.iterdir())
