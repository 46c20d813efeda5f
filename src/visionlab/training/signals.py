"""Stop cleanly on SIGINT, SIGTERM and SIGUSR2 (SLURM preemption via submitit), and SIGHUP if asked.

The first signal only raises a flag: the loop finishes its step, saves last.pt, writes
metrics.json with status "interrupted" and exits with 128 + the signal number. A second
SIGINT raises KeyboardInterrupt at once, for a user who really means it (vl-train exits 130).
A hangup (the terminal closed) is no stop unless `trainer.on_hangup=stop`: by default terminal.py
silences the terminal and the run carries on. A signal the parent set to be ignored (SIGHUP under nohup) stays ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from visionlab import terminal

STOPPING = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
HANDLED = (*STOPPING, signal.SIGHUP)  # with on_hangup="stop"
ON_HANGUP = ("continue", "stop")


class StopRequest:
    """`signum`: the signal this process received; `agreed`: on several processes, the one every rank acts on,
    agreed by fit() after each step (the largest any rank received), which may be another rank's."""

    def __init__(self, on_hangup: str = "continue") -> None:
        self.signum: int | None = None
        self.agreed: int | None = None
        self.signals = HANDLED if on_hangup == "stop" else STOPPING
        self._previous: dict[int, object] = {}

    def __bool__(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.signals:
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def pass_on(self) -> None:
        """After the clean stop, give the signal to whoever handled it before us.

        submitit's SIGUSR2 handler requeues a preempted SLURM job; Python's own SIGINT handler,
        the defaults and the terminal's hangup handler are skipped, since the exit code already
        says what happened.
        """
        previous = self._previous.get(self.signum)
        self.__exit__()
        if callable(previous) and previous not in (signal.default_int_handler, terminal.on_hangup):
            os.kill(os.getpid(), self.signum)

    def _handle(self, signum: int, frame) -> None:
        if signum == signal.SIGHUP:
            terminal.hang_up()  # nobody is there to read what follows
        if self.signum is not None and signum == signal.SIGINT:
            sys.stderr.write("second Ctrl-C: exiting now, without saving\n")
            raise KeyboardInterrupt  # vl-train exits 130; a notebook's kernel lives on (api.py)
        self.signum = signum
        sys.stderr.write(
            f"received {signal.Signals(signum).name}: stopping after this step (Ctrl-C again to exit now)\n"
        )
