"""How many CPU threads a run takes: its share of the cores it may use, beside the other visionlab runs alive.

The rule is docs/architecture.md, "Sharing the CPU cores". Nothing here imports torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from visionlab.run_registry import Entry

CGROUP = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Budget:
    """The cores a run may use, and what limits them (said in the log)."""

    cores: int
    cpus: frozenset[int]  # the affinity: which cores, to tell runs that share them from runs pinned elsewhere
    why: str


def allowed() -> Budget:
    """A SLURM job's CPUs (`--cpus-per-task`: a cluster without CPU binding lets the process run on every
    core of a node it shares), else the affinity (taskset, a scheduler's pinning), capped by a cgroup's CPU quota."""
    cpus = frozenset(os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1))
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return Budget(int(slurm), cpus, f"SLURM_CPUS_PER_TASK={slurm}")
    quota = cgroup_quota()
    if quota is not None and quota < len(cpus):
        return Budget(max(int(quota), 1), cpus, f"a CPU quota of {quota:g} cores (cgroup)")
    return Budget(len(cpus), cpus, f"{len(cpus)} core{'s' * (len(cpus) != 1)}")


def cgroup_quota(membership: Path = Path("/proc/self/cgroup"), root: Path = CGROUP) -> float | None:
    """The tightest CPU quota (in cores) on this process's cgroup and its parents (v2 `cpu.max`, v1 `cfs_quota_us`)."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2
            quotas += [q for folder in up_from(root, path) if (q := quota_v2(folder / "cpu.max")) is not None]
        elif "cpu" in controllers.split(","):
            for mount in (root / "cpu", root / "cpu,cpuacct"):
                quotas += [q for folder in up_from(mount, path) if (q := quota_v1(folder)) is not None]
    return min(quotas, default=None)


def up_from(root: Path, path: str) -> list[Path]:
    folder = root / path.lstrip("/")
    return [folder, *[parent for parent in folder.parents if parent.is_relative_to(root)]]


def quota_v2(file: Path) -> float | None:
    try:
        limit, period = file.read_text().split()[:2]
        return None if limit == "max" else int(limit) / int(period)
    except (OSError, ValueError):
        return None


def quota_v1(folder: Path) -> float | None:
    try:
        limit, period = int((folder / "cpu.cfs_quota_us").read_text()), int((folder / "cpu.cfs_period_us").read_text())
        return None if limit <= 0 else limit / period
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Share:
    """What the rule gives this run, seen from its own cores."""

    threads: int
    runs: int  # visionlab runs on these cores, this one included (with a sweep's siblings not yet started)
    total: int  # their threads, all together
    cores: int
    asked: bool  # some run on these cores set trainer.threads

    @property
    def oversubscribed(self) -> bool:
        return self.total > self.cores

    def warning(self, own_threads: int | None) -> str:
        """The one line a run says when the cores are oversubscribed, with the setting that helps."""
        said = (
            f"the CPU cores are oversubscribed: {self.runs} visionlab runs use {self.total} threads on {self.cores} "
            f"core{'s' * (self.cores != 1)}, so each waits for the others and all run slower than one after another"
        )
        if own_threads is not None and self.total - own_threads + 1 <= self.cores:
            return f"{said}: leave trainer.threads unset (this run asks for {own_threads}) and the runs share the cores"
        if self.asked and self.runs <= self.cores:
            return f"{said}: leave trainer.threads unset in the runs that set it, and they share the cores"
        return f"{said}: run at most {self.cores} at once (a joblib sweep: hydra.launcher.n_jobs={self.cores})"


def share(me: Entry, budget: Budget, others: list[Entry], siblings: int = 1) -> Share:
    """`me`'s threads: a run that set trainer.threads gets it; the others divide what is left of the cores, at least
    one thread each, the oldest taking one more while the division leaves some over. `siblings`: the parallel jobs
    of this run's sweep, counted as sharing runs even before they have started."""
    sharing = sorted([e for e in others if e.cpus & budget.cpus] + [me], key=lambda e: e.order)
    fixed = sum(e.threads for e in sharing if e.threads is not None)
    shared = [e for e in sharing if e.threads is None]
    phantoms = max(siblings - len(sharing), 0) if me.threads is None else 0
    slots = len(shared) + phantoms
    base, over = divmod(max(budget.cores - fixed, 0), max(slots, 1))
    given = [max(base + (i < over), 1) for i in range(slots)]
    threads = me.threads if me.threads is not None else given[shared.index(me)]
    return Share(threads, len(sharing) + phantoms, fixed + sum(given), budget.cores, fixed > 0)


def joblib_siblings(n_jobs: int, cores: int) -> int:
    """How many jobs joblib runs at once for `hydra.launcher.n_jobs` (-1: one per core, -2: all but one, ...)."""
    return n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)


def quiet_idle_threads() -> None:
    """Idle OpenMP threads sleep at once instead of spinning (`OMP_WAIT_POLICY=PASSIVE`) where other visionlab runs
    share the cores, where their spinning would take time from the others' working threads. Read by the OpenMP
    runtime when torch loads, so the entry points call this first; a value the user set is kept."""
    from visionlab.run_registry import others_alive

    if "OMP_WAIT_POLICY" not in os.environ and others_alive():
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
