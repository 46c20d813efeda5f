"""A run folder belongs to one run (docs/architecture.md, "Run directory").

Two runs in one folder leave neither's results: metrics.json, the checkpoints and `.hydra/` are the
last writer's, train.log and the TensorBoard logs mix both. So the default folders are claimed with
mkdir, which only one process can do (`new_folder`, conf/train.yaml's `${new_folder:...}`), and a
run holds an OS lock (flock) on its folder's lock file for as long as its process lives; the
kernel drops it however the process ends, SIGKILL included. Hydra opens train.log and writes
`.hydra/` before the task function runs, in every launcher: the train.log handler (`RunLog`,
conf/hydra/job_logging/visionlab.yaml) is the first of our code to run in a job's folder, so it
takes the lock, and refuses the folder, before either is written.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from visionlab.console import RunLogFile
from visionlab.errors import UserError
from visionlab.training.resume import UNFINISHED, run_status

LOCK_FILE = ".lock"  # in the run folder: the holder's pid, host, command and start time, as JSON
HELD = ("metrics.json", "last.pt")  # a folder with either holds a run: its results or its training state


def new_folder(path: str) -> str:
    """`path`, or `path-1`, `path-2`, ...: the first that did not exist, made by this call. Where none can be
    made (no permission, a read-only disk), `path`: Hydra's own mkdir of it then fails, and vl-train says why."""
    candidate, n = path, 0
    while True:
        try:
            Path(candidate).mkdir(parents=True)
            return candidate
        except FileExistsError:
            n += 1
            candidate = f"{path}-{n}"
        except OSError:
            return path


def register_resolver() -> None:
    """`${new_folder:...}`, cached like Hydra's `${now:...}`: a sweep's jobs (and a requeued SLURM job) get
    the folder the sweep claimed from the config's resolver cache, which Hydra copies into each job's config."""
    OmegaConf.register_new_resolver("new_folder", new_folder, use_cache=True, replace=True)


class RunLog(RunLogFile):
    """The job's train.log, opened once this process holds the job's folder (`take`);
    quiet on a full disk (RunLogFile)."""

    def __init__(self, filename: str, resume: str | None = None, **kwargs: Any):
        self.held = take(Path(filename).parent, resume)  # not `lock`: logging.Handler has its own
        super().__init__(filename, **kwargs)

    def close(self) -> None:
        super().close()
        self.held.close()  # the next job of a sweep in this process sets up its own log: this folder is free again


def take(folder: Path, resume: str | None) -> IO[str]:
    """The folder's lock, held until the returned file is closed (or the process ends).

    Refused while another process holds it, and where the folder holds a run (`HELD`) that this
    one does not carry on: any, for a new run; a finished one (completed, diverged, pruned), for
    `resume=auto`. `resume=PATH` was checked before Hydra started (training/resume.py).
    """
    hydra = HydraConfig.get()
    setting = "hydra.sweep.dir" if hydra.mode == RunMode.MULTIRUN else "hydra.run.dir"
    try:
        lock = open(folder / LOCK_FILE, "a+", encoding="utf-8")
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, str(folder)) from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            in_use = f"{folder} is in use by {holder(lock)}: wait for it to end, or choose another {setting}"
            raise UserError(in_use) from None
        refuse_a_held_run(folder, resume, setting, hydra.mode)
        lock.truncate(0)
        lock.write(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "command": " ".join(["vl-train", *hydra.overrides.task]),
                    "started": datetime.datetime.now().isoformat(sep=" ", timespec="seconds"),
                }
            )
            + "\n"
        )
        lock.flush()
    except BaseException as exc:
        # a full disk fails the close's flush too: the first error is the one to tell
        with contextlib.suppress(OSError):
            lock.close()
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror, str(folder)) from None
        raise
    return lock


def holder(lock: IO[str], wait: float = 2.0) -> str:
    """Who holds the lock, as its lock file says: the holder writes it just after taking the lock."""
    deadline = time.monotonic() + wait
    while True:
        lock.seek(0)
        try:
            record = json.loads(lock.read())
            return f"pid {record['pid']} on {record['host']} ({record['command']}, started {record['started']})"
        except (ValueError, KeyError, TypeError):
            if time.monotonic() > deadline:
                return f"another process (its {LOCK_FILE} names none)"
            time.sleep(0.05)


def refuse_a_held_run(folder: Path, resume: str | None, setting: str, mode: RunMode) -> None:
    held = [name for name in HELD if (folder / name).exists()]
    if not held or resume not in (None, "auto"):
        return
    status = run_status(folder)
    if status in UNFINISHED:
        if resume == "auto":
            return
        carry_on = "resume=auto" if mode == RunMode.MULTIRUN else f"resume={folder}"
        raise UserError(
            f"{folder} holds a stopped run ({held[-1]}): carry it on with {carry_on}, or choose another {setting}"
        )
    only = "resume=auto carries on an unfinished run only" if resume else "resume= carries on an interrupted run"
    raise UserError(
        f"{folder} holds a {status} run (metrics.json): choose another {setting}, "
        f"or delete the folder to start over; {only}"
    )
