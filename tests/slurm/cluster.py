"""A real one-node SLURM cluster for the tests, in a folder under /tmp, as root.

munged (authentication), MariaDB and slurmdbd (accounting, so `sacct` answers the launcher's
status polls instead of printing an error each time), slurmctld (the scheduler) and slurmd (the
node, with every core and all memory of this machine). Everything runs in the foreground as
children of the test process, with its own key, sockets and ports, so it leaves a machine's own
munge or SLURM alone and stops with `stop()`. Debian's packages are installed when missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import machine_lock

PACKAGES = ["slurm-wlm", "munge", "slurmdbd", "mariadb-server"]
PROGRAMS = ["munged", "mariadb-install-db", "mariadbd", "slurmdbd", "slurmctld", "slurmd", "sbatch", "sacct"]
SBIN_PATH = f"{os.environ.get('PATH', '')}:/usr/local/sbin:/usr/sbin:/sbin"
PARTITION = "debug"


class CannotStart(Exception):
    """This machine cannot run the test cluster; the message says why (the tests skip with it)."""


def prepare_machine() -> None:
    """Checks for root (slurmd runs the jobs as root) and apt-gets the packages of any missing
    program (CI runs as root on a fresh Debian machine)."""
    if os.geteuid() != 0:
        raise CannotStart("the test cluster runs its daemons and jobs as root: run the tests as root")
    missing = [p for p in PROGRAMS if shutil.which(p, path=SBIN_PATH) is None]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise CannotStart(
            f"{', '.join(missing)} not installed, and there is no apt-get to install {' '.join(PACKAGES)}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with machine_lock("apt"):
        for command in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES],
        ):
            try:
                result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
            except subprocess.TimeoutExpired:
                raise CannotStart(f"`{' '.join(command)}` took more than 15 minutes") from None
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no output"])[-1]
                raise CannotStart(f"`{' '.join(command)}` failed (exit code {result.returncode}): {last}")


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Cluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vl-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SBIN_PATH}
        self.daemons: list[subprocess.Popen] = []
        self.up = False  # every daemon started

    def command(self, *args: str, check: bool = True, timeout: float = 30) -> str:
        """A SLURM command (squeue, scancel, scontrol, sacct...) against this cluster; its stdout."""
        result = subprocess.run(args, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def start(self) -> None:
        munge = self.root / "munge.socket"
        ctld, slurmd, dbd, db = free_ports(4)
        (self.root / "state").mkdir()
        (self.root / "spool").mkdir()
        key = self.root / "munge.key"
        key.write_bytes(secrets.token_bytes(1024))
        key.chmod(0o400)
        self.spawn(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={munge}",
            f"--pid-file={self.root / 'munged.pid'}",
            f"--log-file={self.root / 'munged.log'}",
            f"--seed-file={self.root / 'munged.seed'}",
        )
        self.start_database(db)
        self.wait_for(munge.exists, "munged's socket")
        self.conf.write_text(self.slurm_conf(munge, ctld, slurmd, dbd))
        dbd_conf = self.root / "slurmdbd.conf"  # slurmdbd reads it from slurm.conf's folder
        dbd_conf.write_text(self.slurmdbd_conf(munge, dbd, db))
        dbd_conf.chmod(0o600)
        self.spawn("slurmdbd", "-D")
        self.wait_for(lambda: accepts(dbd), f"slurmdbd on port {dbd}")
        self.spawn("slurmctld", "-D", "-i")
        self.wait_for(lambda: accepts(ctld), f"slurmctld on port {ctld}")
        self.spawn("slurmd", "-D")
        self.wait_for(lambda: self.command("sinfo", "-h", "-o", "%t", check=False).strip() == "idle", "an idle node")
        self.up = True

    def start_database(self, port: int) -> None:
        """A MariaDB server for slurmdbd only: on 127.0.0.1, with one user whose password is made up now."""
        datadir = self.root / "mariadb"
        quick = ["--innodb-log-file-size=4M", "--innodb-flush-method=nosync"]  # a throwaway database: no fsync
        with (self.root / "mariadb-install-db.out").open("w") as log:
            created = subprocess.run(
                [
                    "mariadb-install-db",
                    "--no-defaults",
                    f"--datadir={datadir}",
                    "--user=root",
                    "--skip-test-db",
                    "--auth-root-authentication-method=socket",
                    *quick,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                timeout=120,
            )
        if created.returncode != 0:
            raise CannotStart(f"mariadb-install-db failed (exit code {created.returncode}): see {log.name}")
        self.password = secrets.token_hex(16)
        init = self.root / "init.sql"
        init.write_text(
            f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.password}';\n"
            "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';\n"
        )
        self.spawn(
            "mariadbd",
            "--no-defaults",
            f"--datadir={datadir}",
            "--user=root",
            f"--init-file={init}",
            f"--socket={self.root / 'mariadb.socket'}",
            "--bind-address=127.0.0.1",
            f"--port={port}",
            "--innodb-buffer-pool-size=32M",
            *quick,
        )
        self.wait_for(lambda: accepts(port), f"mariadbd on port {port}")

    def slurm_conf(self, munge: Path, ctld: int, slurmd: int, dbd: int) -> str:
        node = subprocess.run(
            ["slurmd", "-C"], capture_output=True, text=True, env=self.env, check=True
        ).stdout.splitlines()[0]
        host = node.split()[0].removeprefix("NodeName=")
        return f"""\
ClusterName=vltest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld}
SlurmdPort={slurmd}
SlurmUser=root
# cred_expire: a requeued job may start again 6 s after it stopped (SLURM's default: 121 s)
AuthType=auth/munge
AuthInfo=socket={munge},cred_expire=5
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Look at pending jobs every second (default 60 s): a requeued job starts as soon as it may.
SchedulerParameters=sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd}
AccountingStoragePass={munge}
# A job past its time limit gets SIGKILL this many seconds after SIGTERM (default 30).
KillWait=5
ReturnToService=2
StateSaveLocation={self.root / "state"}
SlurmdSpoolDir={self.root / "spool"}
SlurmctldPidFile={self.root / "slurmctld.pid"}
SlurmdPidFile={self.root / "slurmd.pid"}
SlurmctldLogFile={self.root / "slurmctld.log"}
SlurmdLogFile={self.root / "slurmd.log"}
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""

    def slurmdbd_conf(self, munge: Path, dbd: int, db: int) -> str:
        return f"""\
AuthType=auth/munge
AuthInfo=socket={munge}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db}
StorageUser=slurm
StoragePass={self.password}
StorageLoc=slurm_acct_db
PidFile={self.root / "slurmdbd.pid"}
LogFile={self.root / "slurmdbd.log"}
"""

    def spawn(self, program: str, *args: str) -> None:
        with (self.root / f"{program}.out").open("w") as log:
            self.daemons.append(subprocess.Popen([program, *args], stdout=log, stderr=subprocess.STDOUT, env=self.env))

    def wait_for(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            exited = [d for d in self.daemons if d.poll() is not None]
            if exited or time.monotonic() > deadline:
                reason = (
                    f"{exited[0].args[0]} exited with {exited[0].returncode}"
                    if exited
                    else f"no {what} after {timeout:.0f} s"
                )
                raise CannotStart(f"the test cluster did not start ({reason}): its logs are in {self.root}")
            time.sleep(0.2)

    def wait_until_no_jobs(self, timeout: float = 20) -> bool:
        """True once the queue is empty: every job has ended, and the scheduler has recorded how."""
        deadline = time.monotonic() + timeout
        while self.command("squeue", "-h", check=False).strip():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True

    def stop(self, keep_logs: bool = False) -> None:
        """Cancel what still runs, stop the daemons (newest first) and remove the folder, unless its logs are wanted."""
        if self.up and all(d.poll() is None for d in self.daemons):
            self.command("scancel", "--full", f"--partition={PARTITION}", check=False)
            self.wait_until_no_jobs()
        for daemon in reversed(self.daemons):
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if not keep_logs:
            shutil.rmtree(self.root, ignore_errors=True)


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
