"""One rich Console for logs, the progress bar and tables, so they never garble each other.

On a terminal rich draws colours and a live bar, in Jupyter HTML and a widget bar; anywhere else (nohup, CI,
a pipe) it writes plain lines with no control characters, and the per-step lines replace the bar.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import os
import sys
from pathlib import Path

from rich.console import Console

from visionlab.errors import no_space

console = Console()
error_console = Console(stderr=True)
job_label = ""  # "[job N]" in a job of a parallel sweep (parallel_jobs.py), whose lines interleave with its siblings'


def plain_text(renderable) -> str:
    """What `console.print(renderable)` shows, without colours: for the log file."""
    capture = Console(file=io.StringIO(), width=console.width, color_system=None, soft_wrap=True)
    capture.print(renderable)
    return capture.file.getvalue().rstrip()


def live_progress_enabled() -> bool:
    """A live bar on a terminal, and in Jupyter as a widget (rich draws it with ipywidgets; without them, the
    per-step lines)."""
    return console.is_terminal or (console.is_jupyter and importlib.util.find_spec("ipywidgets") is not None)


class ConsoleHandler(logging.Handler):
    """Hydra's console log handler (see conf/hydra/job_logging): errors to stderr, the rest to stdout.

    Records marked `extra={"progress": True}` are skipped when the live bar already shows them,
    and `extra={"file_only": True}` ones when the terminal shows the same thing as a table.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False) or (getattr(record, "progress", False) and live_progress_enabled()):
            return
        try:
            target = error_console if record.levelno >= logging.ERROR else console
            line = f"{job_label}{self.format(record)}"
            # A terminal's lines wrap at word boundaries, by rich, which then knows the rows the live bar sits below;
            # anywhere else (a file, a pipe) a line stays one line.
            target.print(line, markup=False, highlight=False, soft_wrap=not target.is_terminal)
        except Exception:
            self.handleError(record)


class RunLogFile(logging.FileHandler):
    """The run's train.log (conf/hydra/job_logging). A line that finds the disk full silences the file instead of
    printing logging's "--- Logging error ---" traceback for it and every line after; the run then stops at its
    next checkpoint (training/checkpoint.py asks `full_log_file`), with one line on stderr."""

    full = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not no_space(sys.exc_info()[1]):
            super().handleError(record)
            return
        self.full = True
        try:  # what is still buffered, and any later line, goes nowhere: closing the file can then not fail
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass


def full_log_file() -> Path | None:
    """The run's log file if a full disk silenced it."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, RunLogFile) and handler.full:
            return Path(handler.baseFilename)
    return None
