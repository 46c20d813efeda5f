"""How a run can end other than by finishing: each kind has its exit code (docs/architecture.md, "Exit codes").

2 bad config or input (UserError), 3 diverged, 75 no space left for a write (DiskFull), 128+n signal n.
"""

from __future__ import annotations

import contextlib
import errno
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class UserError(Exception):
    """Bad config or input; the message names the key or file, the value and what is accepted."""

    exit_code = 2


class SettingRejected(UserError):
    """A component refuses its own settings on purpose, saying why in words a user can act on.

    Raised from a component's constructor (or first call); `config.build` and `rejections.first_use` add
    which group and which overrides it was (docs/architecture.md, "Config checks"). Anything else a
    component raises is a bug.
    """


class RunStopped(Exception):
    """The run ended early but cleanly: last.pt and metrics.json say where, the exit code says why."""

    status: str
    exit_code: int
    result = None  # the training.loop.FitResult of the epochs finished before the stop


class Interrupted(RunStopped):
    status = "interrupted"

    def __init__(self, signum: int, result=None):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum
        self.result = result


class Diverged(RunStopped):
    status = "diverged"
    exit_code = 3


class Pruned(RunStopped):
    """An Optuna trial's pruner stopped the run after an epoch (visionlab.trial_pruning):
    a normal end of a sweep's job."""

    status = "pruned"
    exit_code = 0

    def __init__(self, epoch: int, result=None):
        super().__init__(f"pruned after epoch {epoch}")
        self.result = result


class DiskFull(RunStopped):
    """A write found no space (or the quota spent): the run stops as a signal stops it, and `resume=` carries on.

    Its exit code is sysexits' EX_TEMPFAIL: the same command succeeds once space is freed.
    """

    status = "interrupted"
    exit_code = 75

    def __init__(self, folder: Path, what: str):
        super().__init__(f"no space left on the disk of {folder} for {what}")
        self.folder = folder
        self.what = what

    def line(self, run_dir: Path) -> str:
        """The one line a user reads: what found no space, where, and what the run keeps."""
        if (run_dir / "last.pt").exists():
            return f"{self}; the last checkpoint saved (last.pt) is intact: free some space, then resume={run_dir}"
        return f"{self}; no checkpoint was written yet: free some space and run again"


def no_space(exc: BaseException | None) -> bool:
    """Whether `exc` is a write that found the disk full, or was raised while handling (or from) one.

    torch.save reports a failed write as a RuntimeError ("unexpected pos ..." from inline_container);
    writing through a Python file object, it carries the file's OSError as its context, errno and all.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in NO_SPACE:
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


@contextlib.contextmanager
def writing(folder: Path, what: str) -> Iterator[None]:
    """A write inside that finds no space raises DiskFull naming `folder` and `what`; an inner DiskFull passes on."""
    try:
        yield
    except DiskFull:
        raise
    except Exception as exc:
        if not no_space(exc):
            raise
        raise DiskFull(folder, what) from exc


def quiet_full_disk_in_threads() -> None:
    """A writer thread (TensorBoard's) that finds no space dies with its traceback on stderr; the main thread
    meets the same error at its next write and stops the run with one line, so the thread's traceback is dropped."""
    if getattr(threading.excepthook, "quiet_full_disk", False):
        return
    previous = threading.excepthook

    def hook(args) -> None:
        if not no_space(args.exc_value):
            previous(args)

    hook.quiet_full_disk = True
    threading.excepthook = hook
