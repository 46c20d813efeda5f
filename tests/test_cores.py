"""The cores a run may use, the registry of live runs, and the rule that divides the cores (docs/architecture.md,
"Sharing the CPU cores"). The real runs sharing them are in tests/cli/test_many_runs.py."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys

import pytest

from visionlab import cores, run_registry
from visionlab.run_registry import Entry

TWO = frozenset({0, 1})


def run(started: float, threads: int | None = None, cpus: frozenset[int] = TWO) -> Entry:
    return Entry(pid=int(started * 10), started=started, cpus=cpus, threads=threads, run_dir="")


def test_a_slurm_job_has_the_cpus_it_was_given(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert cores.allowed().cores == 3 and cores.allowed().why == "SLURM_CPUS_PER_TASK=3"


def test_elsewhere_the_cores_this_process_may_use(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    affinity = len(os.sched_getaffinity(0))
    quota = cores.cgroup_quota()
    assert cores.allowed().cores == (affinity if quota is None or quota >= affinity else max(int(quota), 1))


def test_the_tightest_cgroup_quota_on_the_way_up_counts(tmp_path):
    (tmp_path / "user" / "job").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "user" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "user" / "job" / "cpu.max").write_text("150000 100000\n")
    (tmp_path / "membership").write_text("0::/user/job\n")
    assert cores.cgroup_quota(tmp_path / "membership", tmp_path) == 1.5
    (tmp_path / "membership").write_text("0::/\n")
    assert cores.cgroup_quota(tmp_path / "membership", tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("200000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    (tmp_path / "membership").write_text("4:cpu,cpuacct:/\n")
    assert cores.cgroup_quota(tmp_path / "membership", tmp_path) == 2.0


def test_a_run_alone_takes_every_core():
    me = run(1.0)
    share = cores.share(me, cores.Budget(2, TWO, "2 cores"), [])
    assert (share.threads, share.runs, share.oversubscribed) == (2, 1, False)


def test_runs_divide_the_cores_the_oldest_taking_what_is_left_over():
    runs = [run(1.0), run(2.0), run(3.0)]
    budget = cores.Budget(4, frozenset(range(4)), "4 cores")
    assert [cores.share(me, budget, [r for r in runs if r is not me]).threads for me in runs] == [2, 1, 1]
    assert not cores.share(runs[0], budget, runs[1:]).oversubscribed


def test_a_run_that_set_its_threads_keeps_them_and_the_others_share_the_rest():
    asked, shared = run(1.0, threads=1), run(2.0)
    budget = cores.Budget(4, frozenset(range(4)), "4 cores")
    assert cores.share(asked, budget, [shared]).threads == 1
    assert cores.share(shared, budget, [asked]).threads == 3


def test_runs_on_other_cores_are_not_counted():
    elsewhere = run(1.0, cpus=frozenset({2, 3}))
    assert cores.share(run(2.0), cores.Budget(2, TWO, "2 cores"), [elsewhere]).threads == 2


def test_a_joblib_jobs_siblings_count_before_they_start():
    share = cores.share(run(1.0), cores.Budget(4, frozenset(range(4)), "4 cores"), [], siblings=2)
    assert (share.threads, share.runs) == (2, 2)
    assert cores.joblib_siblings(-1, 4) == 4 and cores.joblib_siblings(-2, 4) == 3 and cores.joblib_siblings(2, 4) == 2


@pytest.mark.parametrize(
    "mine,other,advice",
    [
        (None, None, "run at most 2 at once (a joblib sweep: hydra.launcher.n_jobs=2)"),
        (2, None, "leave trainer.threads unset (this run asks for 2) and the runs share the cores"),
        (None, 2, "leave trainer.threads unset in the runs that set it, and they share the cores"),
    ],
)
def test_oversubscribed_cores_are_one_line_with_the_setting_that_helps(mine, other, advice):
    budget = cores.Budget(2, TWO, "2 cores")
    others = [run(1.0, threads=other), *([run(1.5)] if mine is None and other is None else [])]
    share = cores.share(run(2.0, threads=mine), budget, others)
    assert share.oversubscribed
    line = share.warning(mine)
    assert "\n" not in line and line.startswith(
        f"the CPU cores are oversubscribed: {share.runs} visionlab runs use {share.total} threads on 2 cores"
    )
    assert line.endswith(advice)


HOLDER = """
import sys, time
from visionlab import run_registry
seat = run_registry.join(frozenset({0}), None, "held")
print("joined", flush=True)
time.sleep(600)
"""


def test_a_run_killed_with_sigkill_leaves_no_entry_that_counts(tmp_path, monkeypatch):
    monkeypatch.setenv("VL_RUNS_DIR", str(tmp_path))
    holder = subprocess.Popen([sys.executable, "-c", HOLDER], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "joined"
        (entry,) = run_registry.alive()
        assert (entry.pid, entry.run_dir, entry.threads) == (holder.pid, "held", None)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_registry.alive() == []
    assert not list(tmp_path.iterdir()), "the dead run's file was removed by the reader"


def test_a_run_that_leaves_is_gone_and_a_file_that_is_no_entry_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("VL_RUNS_DIR", str(tmp_path))
    seat = run_registry.join(TWO, 2, "here")
    assert run_registry.alive(exclude=seat) == [] and [e.threads for e in run_registry.alive()] == [2]
    (tmp_path / "junk.run").write_text("not json")
    with open(tmp_path / "junk.run") as junk:  # held, as if by a live process, but no entry
        fcntl.flock(junk, fcntl.LOCK_EX)
        assert [e.run_dir for e in run_registry.alive()] == ["here"]
    seat.leave()
    assert [e.run_dir for e in run_registry.alive()] == []


def test_slurm_jobs_share_only_their_own_allocation(tmp_path, monkeypatch):
    monkeypatch.setenv("VL_RUNS_DIR", str(tmp_path))
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    assert run_registry.folder() == tmp_path / "slurm-77"


POLICY_AT_START = "import os, visionlab.cli; print(os.environ.get('OMP_WAIT_POLICY'))"


def test_vl_train_lets_idle_threads_sleep_only_beside_another_live_run(tmp_path, monkeypatch):
    """cli.py sets OMP_WAIT_POLICY=PASSIVE as it loads, before torch reads it, when another run is alive: spinning
    threads would take the cores from its working ones. Alone a run keeps OpenMP's default; a value set is kept."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | {"VL_RUNS_DIR": str(tmp_path)}

    def policy() -> str:
        done = subprocess.run([sys.executable, "-c", POLICY_AT_START], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert policy() == "None"
    monkeypatch.setenv("VL_RUNS_DIR", str(tmp_path))
    seat = run_registry.join(TWO, None, "the other run")
    try:
        assert policy() == "PASSIVE"
        monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
        cores.quiet_idle_threads()
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE", "the user's value is kept"
    finally:
        seat.leave()
