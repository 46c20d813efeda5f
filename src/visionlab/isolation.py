"""A library call leaves its caller's process as it found it (docs/api.md, "Library manners").

A run changes process-wide state on its way: Hydra's global config, logging's handlers (the run's train.log,
which holds the run folder's lock), signal handlers, torch's thread count, threading's excepthook, the
environment and sys.argv. The CLI's process ends after one run; a notebook's kernel goes on, so every call of
the Python API runs inside `borrowed_process`, which puts each of them back, however the call ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

from visionlab import console
from visionlab.console import ConsoleHandler

# every signal a handler can be set for (SIGKILL and SIGSTOP cannot have one)
SIGNALS = tuple(s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP))


@dataclass
class LoggerState:
    level: int
    handlers: list[logging.Handler]
    propagate: bool
    disabled: bool

    @classmethod
    def of(cls, logger: logging.Logger) -> LoggerState:
        return cls(logger.level, logger.handlers[:], logger.propagate, logger.disabled)

    def restore(self, logger: logging.Logger) -> None:
        logger.setLevel(self.level)
        logger.handlers[:] = self.handlers
        logger.propagate, logger.disabled = self.propagate, self.disabled


def loggers() -> dict[str, logging.Logger]:
    known = {name: item for name, item in logging.Logger.manager.loggerDict.items() if isinstance(item, logging.Logger)}
    return {"": logging.getLogger(), **known}


def handlers_of(states: dict[str, LoggerState]) -> set[int]:
    return {id(h) for state in states.values() for h in state.handlers}


@contextlib.contextmanager
def borrowed_process(show_log: bool = False) -> Iterator[None]:
    """Everything a run may change, put back on the way out; handlers the call added are closed (train.log's
    releases the run folder's lock). `show_log`: the call's log lines reach the caller's output when nothing
    else would show them (a notebook's root logger has no handler)."""
    import torch  # loaded by then for any call that trains; here for the thread count only

    on_main_thread = threading.current_thread() is threading.main_thread()
    signal_handlers = {s: signal.getsignal(s) for s in SIGNALS} if on_main_thread else {}
    logger_states = {name: LoggerState.of(logger) for name, logger in loggers().items()}
    environment = dict(os.environ)
    argv = sys.argv[:]
    torch_threads = torch.get_num_threads()
    cudnn_benchmark = torch.backends.cudnn.benchmark
    excepthook = threading.excepthook
    hydra_config = HydraConfig.instance().cfg
    job_label = console.job_label
    cwd = os.getcwd()
    if show_log and not logging.getLogger().handlers:
        logging.getLogger().addHandler(ConsoleHandler())
        logging.getLogger().setLevel(logging.INFO)
    try:
        yield
    finally:
        kept = handlers_of(logger_states)
        for name, state in logger_states.items():  # loggers made during the call are the libraries' own
            logger = logging.getLogger(name or None)
            for handler in [h for h in logger.handlers if id(h) not in kept]:
                with contextlib.suppress(Exception):  # a full disk's file: closing must not hide the call's error
                    handler.close()
            state.restore(logger)
        for sig, handler in signal_handlers.items():
            if handler is not None and signal.getsignal(sig) is not handler:
                signal.signal(sig, handler)
        os.environ.clear()
        os.environ.update(environment)
        sys.argv[:] = argv
        torch.set_num_threads(torch_threads)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        threading.excepthook = excepthook
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = hydra_config
        console.job_label = job_label
        os.chdir(cwd)
