"""Several real vl-train processes on the same two cores: the threads each takes, the one-line warning when the cores
are oversubscribed, and a joblib sweep's jobs (docs/architecture.md, "Sharing the CPU cores").

Every process is pinned to the same two cores (its affinity), whatever this machine has; each test's runs
see only each other (conftest's `runs_of_this_test_only`). Nothing is timed: each test waits for a state
of a run (its entry in the registry, a checkpoint) and reads what the runs chose.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import TINY, VL_TRAIN, read_metrics, signals_at_default, wait_for_position
from visionlab import cores, run_registry

CORES = sorted(os.sched_getaffinity(0))[:2]
pytestmark = pytest.mark.skipif(
    len(CORES) < 2 or (cores.cgroup_quota() or 2) < 2, reason="needs two cores this process may use"
)
SHARED = [arg for arg in TINY if not arg.startswith("trainer.threads=")]  # threads unset: a share of the cores
# Longer than any test needs: stopped with Ctrl-C once it has shown enough.
LONG = [*SHARED, "model=cnn", "trainer.epochs=1000", "trainer.early_stopping.patience=null", "trainer.batch_size=16"]


def on_two_cores() -> None:
    """Also SIGINT at its default: `stop` sends Ctrl-C,
    which a suite started in the background would pass on ignored."""
    os.sched_setaffinity(0, CORES)
    signals_at_default()


def start(args: list[str], run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [str(VL_TRAIN), *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=on_two_cores,
    )


def wait_registered(count: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(run_registry.alive()) < count:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "the run never entered the registry"
        time.sleep(0.05)


def wait_for_line(path: Path, text: str, process: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while not (path.is_file() and text in (log := path.read_text())):
        assert process.poll() is None, f"the run ended (exit {process.returncode}) before saying {text!r}"
        assert time.monotonic() < deadline, f"no {text!r} in {path}"
        time.sleep(0.1)
    return log


def stop(process: subprocess.Popen) -> None:
    """The long first run has shown what it had to: Ctrl-C, which saves and exits 130."""
    process.send_signal(signal.SIGINT)
    process.communicate(timeout=120)
    assert process.returncode == 130


def test_a_second_run_takes_half_the_cores_and_the_first_gives_them_up_and_back(tmp_path):
    first = start(LONG, tmp_path / "first")
    try:
        wait_for_position(tmp_path / "first", first, lambda position: position["epoch"] >= 2)
        # long enough for the first run to see it: it looks at step boundaries, at most once a second, and on a
        # busy machine a two-epoch linear run can start and end between two of its looks
        second = start([*SHARED, "model=linear", "trainer.epochs=50"], tmp_path / "second")
        out, _ = second.communicate(timeout=300)
        assert second.returncode == 0, out
        assert "device: cpu (1 CPU threads)" in out
        assert "CPU cores: 2 cores shared by 2 visionlab runs: this run takes 1 thread (more as the others end)" in out
        given_back = "CPU threads: 1 -> 2 (1 visionlab run on 2 cores now)"
        log = wait_for_line(tmp_path / "first" / "train.log", given_back, first)
    finally:
        stop(first)
    assert "device: cpu (2 CPU threads)" in log and "CPU threads: 2 -> 1 (2 visionlab runs on 2 cores now)" in log
    assert log.index("CPU threads: 2 -> 1") < log.index("CPU threads: 1 -> 2")
    assert "oversubscribed" not in out + log
    assert run_registry.alive() == [], "both runs left the registry"


def test_runs_that_set_their_threads_too_high_are_told_once_what_helps(tmp_path):
    first = start([*LONG, "trainer.threads=2"], tmp_path / "first")
    try:
        wait_registered(1, first)
        second = start([*SHARED, "model=linear", "trainer.threads=2"], tmp_path / "second")
        out, _ = second.communicate(timeout=300)
    finally:
        stop(first)
    assert second.returncode == 0, out
    (warning,) = [line for line in out.splitlines() if "oversubscribed" in line]
    assert warning.split("][WARNING] ", 1)[1] == (
        "the CPU cores are oversubscribed: 2 visionlab runs use 4 threads on 2 cores, so each waits for the others and "
        "all run slower than one after another: leave trainer.threads unset in the runs that set it, and they share "
        "the cores"
    )
    assert "device: cpu (2 CPU threads)" in out, "a run's own trainer.threads is kept"
    assert read_metrics(tmp_path / "second")["status"] == "completed"


def test_a_joblib_sweeps_jobs_share_the_cores_and_label_their_lines(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        *SHARED,
        "model=linear",
        "seed=0,1,2",
        f"hydra.sweep.dir={sweep}",
    ]
    done = subprocess.run(
        [str(VL_TRAIN), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300, preexec_fn=on_two_cores
    )
    assert done.returncode == 0, done.stdout + done.stderr
    for job in ("0", "1", "2"):
        log = (sweep / job / "train.log").read_text()
        assert "device: cpu (1 CPU threads)" in log, log
        assert (
            "CPU cores: 2 cores shared by 2 visionlab runs (with this sweep's parallel jobs): this run takes 1 thread"
            in log
        )
        labelled = re.search(rf"^\[job {job}\]\[[-\d :]+\]\[INFO\] device: cpu", done.stdout, re.MULTILINE)
        assert labelled, "its terminal lines say whose they are"
    assert "oversubscribed" not in done.stdout + done.stderr
