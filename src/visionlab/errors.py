"""How a run can end other than by finishing: each kind has its exit code (docs/architecture.md, "Exit codes")."""

from __future__ import annotations

import signal


class UserError(Exception):
    """Bad config or input; the message names the key or file, the value and what is accepted."""

    exit_code = 2


class SettingRejected(UserError):
    """A component refuses its own settings on purpose, saying why in words a user can act on.

    Raised from a component's constructor (or first call); `config.build` and `config.first_use` add
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
    """An Optuna trial's pruner stopped the run after an epoch (visionlab.trial_pruning): a normal end of a sweep's job."""

    status = "pruned"
    exit_code = 0

    def __init__(self, epoch: int, result=None):
        super().__init__(f"pruned after epoch {epoch}")
        self.result = result
