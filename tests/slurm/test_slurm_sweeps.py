"""`vl-train -m hydra/launcher=slurm` against a real scheduler: a sweep with a failing job, a job
preempted with SIGUSR2 and a job at its time limit, both requeued by submitit and resumed to the
metrics.json of a run never stopped, and a job that trains on 2 processes, and one of 2 tasks that are one run's
2 processes, preempted the same way."""

from __future__ import annotations

import csv
import re
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, VL_TRAIN, read_metrics, without_timing
from tests.slurm.cluster import PARTITION, Cluster

pytestmark = pytest.mark.slurm

# The shipped example launcher with this cluster's partition, no GPU and one CPU per job.
SLURM = [
    "-m",
    "hydra/launcher=slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]
# Unset, torch's threads come from the job's CPUs: 1, so a job computes what TINY's trainer.threads=1 does locally.
THREADS_FROM_SLURM = "trainer.threads=null"
# 34 steps of 16 images per epoch, a checkpoint every 7 steps: the tests wait for one to know where the run is.
STOPPABLE = [*TINY, "trainer.epochs=3", "trainer.batch_size=16", "trainer.checkpoint_every_steps=7", "model=cnn"]


def finish(process: subprocess.Popen, timeout: float = 90) -> tuple[str, str]:
    stdout, stderr = process.communicate(timeout=timeout)
    assert process.returncode == 0, stdout + stderr
    return stdout, stderr


def wait_until(condition, what: str, *sweeps: subprocess.Popen, timeout: float = 60) -> None:
    """Polls the runs' files for a state; fails if a sweep ends or the time runs out first."""
    deadline = time.monotonic() + timeout
    while not condition():
        ended = [sweep for sweep in sweeps if sweep.poll() is not None]
        if ended or time.monotonic() > deadline:
            printed = [sweep.communicate() for sweep in ended]
            raise AssertionError(f"never saw {what}; the sweeps that ended printed: {printed}")
        time.sleep(0.05)


def checkpoint_step(run_dir: Path) -> int:
    """The optimizer step of the run's last.pt, or -1 while it has none."""
    try:
        return torch.load(run_dir / "last.pt", weights_only=True)["position"]["step"]
    except (OSError, RuntimeError, EOFError):  # not written yet
        return -1


def status(run_dir: Path) -> str | None:
    try:
        return read_metrics(run_dir)["status"]
    except (OSError, ValueError):
        return None


def job_id(sweep: Path) -> str:
    """The SLURM job of a one-job sweep: submitit names its folder for it."""
    (job,) = [p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()]
    return job


def state_and_restarts(slurm: Cluster, job: str) -> tuple[str, int]:
    """What the scheduler says of the job: its state, and how many times it was requeued."""
    fields = dict(
        f.split("=", 1) for f in slurm.command("scontrol", "show", "job", "--oneliner", job).split() if "=" in f
    )
    return fields["JobState"], int(fields["Restarts"])


def submitit_log(sweep: Path) -> str:
    """What the job printed on stderr, every start of it (submitit appends): its signals and requeues."""
    job = job_id(sweep)
    return (sweep / ".submitit" / job / f"{job}_0_log.err").read_text()


def resumed_at(run_dir: Path) -> int:
    """The step the run carried on from after its requeue, as its train.log says."""
    (step,) = re.findall(r"resuming from \S+last\.pt: epoch \d+, step (\d+)", (run_dir / "train.log").read_text())
    return int(step)


@pytest.fixture(scope="module")
def start():
    """Starts a command in the background; kills it at the end if it still runs (after a failed test)."""
    started: list[subprocess.Popen] = []

    def start(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
        cwd.mkdir(parents=True, exist_ok=True)
        started.append(
            subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate()


@pytest.fixture(scope="module")
def submit(slurm, start):
    """A sweep's submitting command, in the background: it waits for its jobs, then reports."""
    return lambda args, sweep: start(
        [str(VL_TRAIN), *SLURM, *args, f"hydra.sweep.dir={sweep}"], sweep.parent, slurm.env
    )


def test_a_sweep_runs_its_jobs_reports_them_and_survives_a_failing_one(submit, tmp_path):
    sweep = tmp_path / "sweep"
    process = submit([*TINY, THREADS_FROM_SLURM, "model=knn", "model.k=1,0"], sweep)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 2, stdout + stderr  # the failed job's: bad config

    assert read_metrics(sweep / "0")["status"] == "completed"
    assert "model.k=0 is invalid" in (sweep / "1" / "train.log").read_text()
    with open(sweep / "summary.csv") as f:
        assert [(row["model.k"], row["status"]) for row in csv.DictReader(f)] == [("1", "completed"), ("0", "failed")]
    assert "2 runs under" in stdout and "1 run(s) failed" in stdout
    # SLURM gave the job 1 CPU: torch took 1 thread, not every core of this machine (job 1 stopped before choosing)
    assert "device: cpu (1 CPU threads)" in (sweep / "0" / "train.log").read_text()
    # Status polls (sacct) work, so nothing but the jobs and the report is printed.
    assert "sacct" not in stdout + stderr and "WARNING" not in stdout + stderr


@pytest.fixture(scope="module")
def stopped_once(slurm, start, submit, tmp_path_factory) -> dict[str, Path]:
    """Two one-job sweeps of the same run, each stopped once by SLURM, requeued and resumed, and the
    run uninterrupted on this machine.

    `preempted` gets SIGUSR2 from `scancel` in epoch 2, as before a preemption. `timed-out` has a one
    minute limit with the warning 10 s before it. SLURM checks time limits every 30 s and sends the
    warning at the first check less than 30 s + 10 s before the end, 20 to 50 s after the start
    (after the run's start-up, even on a busy machine): to be at a known point then, whatever this
    machine's speed, the job is paused (SIGSTOP) after its first checkpoint, and SLURM's warning
    wakes it (SIGCONT, then SIGUSR2). The other two run in that wait.
    """
    root = tmp_path_factory.mktemp("stopped")
    preempted, timed_out, uninterrupted = root / "preempted", root / "timed-out", root / "uninterrupted"
    limits = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10"]
    timing_out = submit([*STOPPABLE, THREADS_FROM_SLURM, "resume=auto", *limits], timed_out)
    preempting = submit([*STOPPABLE, THREADS_FROM_SLURM, "resume=auto"], preempted)
    # At the checkpoint of step 7 (or later), pause the one; at step 42, in epoch 2, send the other
    # what SLURM sends before a preemption.
    signals = {timed_out: (7, "STOP"), preempted: (42, "USR2")}

    def signal_those_there() -> bool:
        for sweep, (step, signal) in list(signals.items()):
            if checkpoint_step(sweep / "0") >= step:
                slurm.command("scancel", f"--signal={signal}", job_id(sweep))
                del signals[sweep]
        return not signals

    wait_until(signal_those_there, "checkpoints at steps 7 and 42", timing_out, preempting)
    running = start([str(VL_TRAIN), *STOPPABLE, f"hydra.run.dir={uninterrupted}"], root)
    wait_until(
        lambda: status(timed_out / "0") == "interrupted",
        "the run stopped by the time limit's warning",
        timing_out,
        timeout=90,
    )
    # The requeued job would have one minute again: give it more, so that it runs to the end this time.
    slurm.command("scontrol", "update", f"JobId={job_id(timed_out)}", "TimeLimit=10")
    for process in (running, preempting, timing_out):
        finish(process)
    assert slurm.wait_until_no_jobs(), slurm.command("squeue")
    return {"preempted": preempted, "timed-out": timed_out, "uninterrupted": uninterrupted}


@pytest.mark.parametrize(
    "name,submitit_says,signalled_at",
    [
        # the checkpoint step at which the test signals it; how far past it the stop lands depends on how soon SLURM
        # delivers the signal on a loaded machine, so the check is only that it lands after it and before the end
        ("preempted", "this job is preempted", 42),
        ("timed-out", "this job is timed-out", 7),
    ],
    ids=["preempted", "timed-out"],
)
def test_a_job_slurm_stops_saves_is_requeued_and_ends_as_if_never_stopped(
    slurm, stopped_once, name, submitit_says, signalled_at
):
    sweep = stopped_once[name]
    assert state_and_restarts(slurm, job_id(sweep)) == ("COMPLETED", 1)
    log = submitit_log(sweep)  # vl-train's handler first (it saves last.pt), then submitit's (it requeues)
    assert log.index("received SIGUSR2: stopping after this step") < log.index(submitit_says)
    uninterrupted = read_metrics(stopped_once["uninterrupted"])
    assert signalled_at <= resumed_at(sweep / "0") < uninterrupted["steps"]
    assert without_timing(read_metrics(sweep / "0")) == without_timing(uninterrupted)


# One task of 2 CPUs that trains on 2 processes (trainer.devices=2, 1 thread each): 34 steps of 16 images an epoch.
# TINY's trainer.threads=1 stays: with threads from the job, rank 0 takes both CPUs once rank 1 has ended, and what
# it computes after (the test pass) differs from a run of 1 thread in the last digits.
ON_TWO = [*TINY, "model=mlp", "model.hidden=[32]", "trainer.epochs=3", "trainer.batch_size=16", "trainer.devices=2"]
TWO_CPUS = [
    arg if not arg.startswith("hydra.launcher.cpus_per_task=") else "hydra.launcher.cpus_per_task=2" for arg in SLURM
]


def test_a_job_on_two_processes_is_preempted_requeued_and_ends_as_if_never_stopped(slurm, start, tmp_path):
    preempted, uninterrupted = tmp_path / "preempted", tmp_path / "uninterrupted"
    preempting = start(
        [str(VL_TRAIN), *TWO_CPUS, *ON_TWO, "resume=auto", f"hydra.sweep.dir={preempted}"],
        tmp_path,
        slurm.env,
    )
    wait_until(lambda: checkpoint_step(preempted / "0") >= 34, "epoch 1's checkpoint", preempting, timeout=180)
    slurm.command("scancel", "--signal=USR2", job_id(preempted))
    running = start([str(VL_TRAIN), *ON_TWO, f"hydra.run.dir={uninterrupted}"], tmp_path)
    finish(running, timeout=300)
    finish(preempting, timeout=300)
    assert state_and_restarts(slurm, job_id(preempted)) == ("COMPLETED", 1)
    log = submitit_log(preempted)  # the ranks stop and save first, then vl-train hands the signal to submitit
    assert log.index("received SIGUSR2: stopping after this step") < log.index("this job is preempted")
    assert resumed_at(preempted / "0") >= 34
    assert without_timing(read_metrics(preempted / "0")) == without_timing(read_metrics(uninterrupted))


def test_a_job_of_two_tasks_is_one_run_preempted_requeued_and_ended_as_if_never_stopped(slurm, start, tmp_path):
    """Two tasks of 1 CPU are the run's 2 processes: task 0 is rank 0 and owns the folder, task 1 writes nothing
    there."""
    preempted, uninterrupted = tmp_path / "preempted", tmp_path / "uninterrupted"
    two_tasks = [*SLURM, "hydra.launcher.tasks_per_node=2", *ON_TWO, THREADS_FROM_SLURM, "resume=auto"]
    preempting = start([str(VL_TRAIN), *two_tasks, f"hydra.sweep.dir={preempted}"], tmp_path, slurm.env)
    wait_until(lambda: checkpoint_step(preempted / "0") >= 34, "epoch 1's checkpoint", preempting, timeout=180)
    slurm.command("scancel", "--signal=USR2", job_id(preempted))
    running = start([str(VL_TRAIN), *ON_TWO, f"hydra.run.dir={uninterrupted}"], tmp_path)
    finish(running, timeout=300)
    finish(preempting, timeout=300)  # task 0's result: task 1 may still be exiting
    assert slurm.wait_until_no_jobs(), slurm.command("squeue")
    assert state_and_restarts(slurm, job_id(preempted)) == ("COMPLETED", 1)  # one requeue, task 0's
    log = submitit_log(preempted)
    assert log.index("received SIGUSR2: stopping after this step") < log.index("this job is preempted")
    task_1 = (preempted / ".submitit" / job_id(preempted) / f"{job_id(preempted)}_1_log.err").read_text()
    assert "received SIGUSR2: stopping after this step" in task_1  # its submitit handler leaves the requeue to task 0
    assert resumed_at(preempted / "0") >= 34  # one run: one resume in one train.log
    assert sorted(p.name for p in (preempted / "0" / ".hydra").iterdir()) == [
        "config.yaml",
        "hydra.yaml",
        "overrides.yaml",
    ]
    assert without_timing(read_metrics(preempted / "0")) == without_timing(read_metrics(uninterrupted))
