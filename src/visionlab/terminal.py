"""The terminal is a best-effort sink: no write to it can crash or stall a run (docs/architecture.md, "The terminal").

`install()` replaces sys.stdout and sys.stderr with streams that put each write on one queue,
written out in order by a daemon thread. A write that fails (EIO once the terminal hung up, EPIPE
once `| head` exited, ENOSPC, EBADF) marks that stream lost: its file descriptor is pointed at
/dev/null, so that nothing else (C libraries, the interpreter's exit flush) trips on it either,
and the run goes on into train.log. A reader that stops reading (a paused `| less`) fills the
queue; what does not fit is dropped rather than waited for.

SIGHUP (the terminal closed: an SSH connection dropped, a tmux session killed) silences the
streams that are a terminal and lets the run carry on; `trainer.on_hangup=stop` makes it a stop
request instead (training/signals.py). A SIGHUP that the parent set to be ignored (nohup) stays ignored.
"""

from __future__ import annotations

import atexit
import collections
import errno
import io
import os
import signal
import sys
import threading
from typing import TextIO

MAX_PENDING = 1 << 20  # characters queued for a terminal that is not reading; more are dropped
EXIT_DRAIN_SECONDS = 5.0  # how long the exit waits for a slow reader to take the last lines

notices: list[str] = []  # why the terminal was lost, not yet in the run's log (a cheap check every step)


def take_notices() -> list[str]:
    """What happened to the terminal since the last call, each said once (the caller logs it to train.log)."""
    taken = notices[:]
    del notices[: len(taken)]
    return taken


class _Writer:
    """One queue and one thread for both streams, so stdout and stderr lines keep their order."""

    def __init__(self) -> None:
        self.pending: collections.deque[tuple[GuardedStream, str]] = collections.deque()
        self.pending_chars = 0
        self.busy = False
        self.condition = threading.Condition()
        self.thread: threading.Thread | None = None

    def put(self, stream: GuardedStream, text: str) -> None:
        with self.condition:
            if self.pending_chars + len(text) > MAX_PENDING:
                stream.dropped += len(text)
                return
            self.pending.append((stream, text))
            self.pending_chars += len(text)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="visionlab-terminal", daemon=True)
                self.thread.start()
            self.condition.notify()

    def drain(self, timeout: float) -> None:
        """Wait until what was queued has been written, or `timeout` seconds."""
        with self.condition:
            self.condition.wait_for(lambda: not self.pending and not self.busy, timeout=timeout)

    def _run(self) -> None:
        while True:
            with self.condition:
                self.condition.wait_for(lambda: self.pending)
                stream, text = self.pending.popleft()
                self.pending_chars -= len(text)
                self.busy = True
            try:
                stream.write_now(text)
            finally:
                with self.condition:
                    self.busy = False
                    self.condition.notify_all()


_writer = _Writer()
os.register_at_fork(after_in_child=_writer.__init__)  # a forked child has no writer thread, nor the parent's lock state


class GuardedStream(io.TextIOBase):
    """A stand-in for sys.stdout or sys.stderr that never raises and never blocks the caller."""

    def __init__(self, raw: TextIO, name: str):
        super().__init__()
        self.raw = raw
        self.name = name
        self.lost: str | None = None  # why it stopped taking output
        self.dropped = 0  # characters dropped while the reader was not reading
        try:
            self.fd: int | None = raw.fileno()
            self.is_terminal = os.isatty(self.fd)
        except (OSError, ValueError, AttributeError):
            self.fd, self.is_terminal = None, False

    @property
    def encoding(self) -> str:
        return getattr(self.raw, "encoding", "utf-8")

    @property
    def errors(self) -> str:
        return getattr(self.raw, "errors", "strict")

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return self.lost is None and self.is_terminal

    def fileno(self) -> int:
        if self.fd is None:
            raise io.UnsupportedOperation("fileno")
        return self.fd

    def write(self, text: str) -> int:
        if self.lost is None and text:
            _writer.put(self, text)
        return len(text)

    def flush(self) -> None:
        """Nothing to wait for: the writer thread writes each piece straight to the descriptor
        (the exit drains the queue)."""

    def write_now(self, text: str) -> None:
        """Straight to the descriptor: a thread blocked here holds no lock that the exit needs."""
        if self.lost is not None:
            return
        if self.dropped:
            dropped, self.dropped = self.dropped, 0
            text = f"[{dropped:,} characters of output dropped: the terminal was not reading]\n{text}"
        try:
            if self.fd is None:
                self.raw.write(text)
                self.raw.flush()
                return
            data = memoryview(text.encode(self.encoding, "replace"))
            while data:
                data = data[os.write(self.fd, data) :]
        except (OSError, ValueError) as exc:  # ValueError: the file was closed under us
            reason = errno.errorcode.get(exc.errno, str(exc.errno)) if isinstance(exc, OSError) else "closed"
            self.silence(f"{self.name} stopped taking output ({reason})")

    def silence(self, reason: str, notice: bool = True) -> None:
        """From now on this stream writes nowhere; its descriptor too, for writers that bypass it."""
        if self.lost is not None:
            return
        self.lost = reason
        if notice:
            notices.append(reason)
        if self.fd is not None:
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self.fd)
                os.close(devnull)
            except OSError:
                pass


# by install(), not read back from sys: a live progress bar swaps in its own proxies
_installed: list[GuardedStream] = []


def streams() -> list[GuardedStream]:
    return list(_installed)


def hang_up() -> None:
    """The terminal closed: the streams that were a terminal go quiet (a redirect to a file keeps working)."""
    terminals = [stream for stream in streams() if stream.is_terminal]
    for stream in terminals:
        stream.silence("the terminal closed", notice=False)
    quiet = (
        f"{' and '.join(s.name for s in terminals)} now {'go' if len(terminals) > 1 else 'goes'} nowhere"
        if terminals
        else "no output went to it"
    )
    notices.append(f"the terminal closed (SIGHUP; {quiet})")


def on_hangup(signum: int, frame) -> None:
    hang_up()


def install() -> None:
    """Guard stdout and stderr, and carry on through a hangup. Idempotent; a no-op off the main thread."""
    for fd, name in ((1, "stdout"), (2, "stderr")):
        raw = getattr(sys, name)
        if isinstance(raw, GuardedStream):
            continue
        if raw is None:  # started with the descriptor closed (`>&-`): files opened later must not take its number
            guarded = GuardedStream(os.fdopen(os.open(os.devnull, os.O_WRONLY), "w"), name)
            guarded.silence(f"{name} was closed", notice=False)
            os.dup2(guarded.raw.fileno(), fd)
        else:
            try:
                raw.flush()  # what was written before: from here on only the guard writes to the descriptor
            except (OSError, ValueError):
                pass
            guarded = GuardedStream(raw, name)
        setattr(sys, name, guarded)
        _installed.append(guarded)
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, on_hangup)


def drain() -> None:
    """Let the last lines reach a reader that is still reading, then stop waiting."""
    _writer.drain(EXIT_DRAIN_SECONDS)


atexit.register(drain)
