"""StopRequest: the first signal asks for a clean stop, a second Ctrl-C means now."""

from __future__ import annotations

import os
import signal

import pytest

from visionlab.training.signals import HANDLED, StopRequest


def test_first_signal_only_raises_the_flag_and_a_second_ctrl_c_exits(capsys, signals_as_from_a_shell):
    with StopRequest() as stop:
        assert not stop
        os.kill(os.getpid(), signal.SIGINT)
        assert stop and stop.signum == signal.SIGINT  # no KeyboardInterrupt: the step may finish
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert "second Ctrl-C: exiting now" in capsys.readouterr().err


@pytest.mark.parametrize("signum", HANDLED)
def test_each_handled_signal_is_caught_and_handlers_are_restored(signum, signals_as_from_a_shell):
    before = signal.getsignal(signum)
    with StopRequest(on_hangup="stop") as stop:
        os.kill(os.getpid(), signum)
        assert stop.signum == signum
    assert signal.getsignal(signum) is before


def test_a_hangup_is_no_stop_by_default_and_an_ignored_one_stays_ignored():
    with StopRequest() as stop:
        assert signal.SIGHUP not in stop.signals and signal.SIGTERM in stop.signals
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup leaves it
    try:
        with StopRequest(on_hangup="stop") as stop:
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert not stop
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_pass_on_hands_the_signal_to_the_previous_python_handler():
    """submitit's SIGUSR2 handler requeues a preempted job: it must still run after our clean stop."""
    seen = []
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: seen.append(signum))
    try:
        with StopRequest() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert not seen
            stop.pass_on()
        assert seen == [signal.SIGUSR2]
    finally:
        signal.signal(signal.SIGUSR2, previous)
