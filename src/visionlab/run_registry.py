"""The visionlab runs alive on this machine: a folder of one small file per run, each held under flock.

docs/architecture.md, "Sharing the CPU cores". A run's file says which cores it may use and how
many threads it asked for (`trainer.threads`, or null to share). The run holds an exclusive flock
on it for as long as it lives, so the kernel drops the lock when the process ends however it ends
(SIGKILL, a crash, the OOM killer): a file whose lock can be taken belongs to no live run, and is
skipped and removed. A file is written under a dot-name, locked, then renamed into place, so a
reader never takes a new run's file for a dead one. Nothing here imports torch: the entry points
read the folder before torch loads (see `others_alive`).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

FOLDER_ENV = "VL_RUNS_DIR"  # another folder, e.g. for tests that must not see the machine's other runs
MACHINE_FOLDER = Path("/tmp/visionlab-runs")  # every user's runs: they share the same cores


@dataclass(frozen=True)
class Entry:
    pid: int
    started: float
    cpus: frozenset[int]  # the cores the run may use (its affinity)
    threads: int | None  # trainer.threads as asked; None: a share of the cores
    run_dir: str

    @property
    def order(self) -> tuple[float, int]:
        return self.started, self.pid


def folder() -> Path:
    """`VL_RUNS_DIR`, else the machine's folder; a SLURM job's runs share only its own allocation."""
    base = Path(os.environ[FOLDER_ENV]) if os.environ.get(FOLDER_ENV) else MACHINE_FOLDER
    job = os.environ.get("SLURM_JOB_ID", "")
    return base / f"slurm-{job}" if job.isdigit() else base


def usable_folder() -> Path | None:
    """The folder, made writable for every user (sticky, like /tmp), or None where it cannot be written."""
    path = folder()
    try:
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            for made in (path.parent, path):
                if MACHINE_FOLDER in (made, made.parent) and made.stat().st_uid == os.getuid():
                    os.chmod(made, 0o1777)
        return path if os.access(path, os.W_OK | os.X_OK) else None
    except OSError:
        return None


class Seat:
    """This run's place in the folder, held until `leave()` or the process ends."""

    def __init__(self, path: Path, handle: int, entry: Entry):
        self.path, self.handle, self.entry = path, handle, entry

    def leave(self) -> None:
        if self.handle < 0:
            return
        try:
            self.path.unlink()
        except OSError:
            pass
        os.close(self.handle)
        self.handle = -1


def join(cpus: frozenset[int], threads: int | None, run_dir: str) -> Seat | None:
    """Enter this run; None where the folder cannot be written (the run then shares nothing, and says nothing)."""
    where = usable_folder()
    if where is None:
        return None
    entry = Entry(os.getpid(), time.time(), cpus, threads, run_dir)
    final = where / f"{entry.pid}-{time.monotonic_ns()}.run"
    hidden = where / f".{final.name}"
    try:
        handle = os.open(hidden, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError:
        return None
    body = {"pid": entry.pid, "started": entry.started, "cpus": sorted(cpus), "threads": threads, "run_dir": run_dir}
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.write(handle, json.dumps(body).encode())
        os.rename(hidden, final)
    except OSError:  # a full disk, say: this run shares nothing rather than stop
        os.close(handle)
        hidden.unlink(missing_ok=True)
        return None
    return Seat(final, handle, entry)


def alive(exclude: Seat | None = None) -> list[Entry]:
    """The live runs' entries, oldest first (without `exclude`'s own); dead runs' files are removed on the way."""
    where = folder()
    try:
        names = [name for name in os.listdir(where) if name.endswith(".run") and not name.startswith(".")]
    except OSError:
        return []
    entries = []
    for name in names:
        if exclude is not None and name == exclude.path.name:
            continue
        entry = read_if_alive(where / name)
        if entry is not None:
            entries.append(entry)
    return sorted(entries, key=lambda e: e.order)


def read_if_alive(path: Path) -> Entry | None:
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:  # gone since the listing
        return None
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:  # held: its run is alive
            return parse(os.read(handle, 1 << 16))
        try:  # nobody holds it: its run has ended
            path.unlink()
        except OSError:  # another user's file in the sticky folder: left, and skipped
            pass
        return None
    finally:
        os.close(handle)


def parse(data: bytes) -> Entry | None:
    """A live run's entry; None for a file that is no visionlab entry (anyone may write into the folder)."""
    try:
        body = json.loads(data)
        threads = body["threads"]
        return Entry(
            int(body["pid"]),
            float(body["started"]),
            frozenset(int(c) for c in body["cpus"]),
            None if threads is None else max(int(threads), 1),
            str(body.get("run_dir", "")),
        )
    except (ValueError, KeyError, TypeError):
        return None


def others_alive() -> bool:
    """Whether another visionlab run is alive now (cheap: the entry points ask before torch loads)."""
    return bool(alive())
