"""A run survives its terminal: real hangups of a pseudo-terminal, tmux, nohup, and readers that go away.

Each test waits for a state of the run (a checkpoint on disk), not for a printed line, before it
pulls the terminal away, and checks the run's own files afterwards.
"""

from __future__ import annotations

import fcntl
import os
import pty
import shutil
import signal
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import (
    TINY,
    VL_TRAIN,
    ensure_debian_package,
    metrics_of_a_run_left_alone,
    read_metrics,
    run_cli,
    signals_at_default,
    tmux_session,
    wait_for_position,
    without_timing,
)

# 6 epochs of 38 small CNN steps: a hangup after epoch 1's checkpoint lands with epochs to spare.
LONG = [*TINY, "trainer.epochs=6", "trainer.batch_size=16", "trainer.log_every_n_steps=3", "model=cnn"]


@pytest.fixture(scope="module")
def unstopped(tmp_path_factory) -> dict:
    return metrics_of_a_run_left_alone(LONG, tmp_path_factory)


class PseudoTerminal:
    """`argv` as the session leader of a new pseudo-terminal, as a login shell's job would be;
    its screen is read as it goes."""

    def __init__(self, argv: list[str], cwd: Path):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, b"\x1e\x00\x78\x00\x00\x00\x00\x00")  # 30 rows, 120 columns

        def controlling_terminal() -> None:  # runs in the child: a new session whose terminal is the slave
            signals_at_default()
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.process = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            preexec_fn=controlling_terminal,
            env={**os.environ, "TERM": "xterm-256color"},
        )
        os.close(slave)
        self.screen = bytearray()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # EIO once the child side is gone, EBADF once hung up
                return
            if not data:
                return
            self.screen += data

    def hang_up(self) -> None:
        """Close the terminal, as sshd does when the connection drops: the kernel sends SIGHUP to the session."""
        os.close(self.master)

    def wait(self, timeout: float = 120) -> int:
        return self.process.wait(timeout=timeout)


def test_a_hangup_mid_epoch_carries_on_to_the_same_metrics(tmp_path, unstopped):
    run_dir = tmp_path / "run"
    terminal = PseudoTerminal([str(VL_TRAIN), *LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_position(run_dir, terminal.process, lambda position: position["epoch"] >= 2)
    screen = bytes(terminal.screen).decode(errors="replace")
    terminal.hang_up()

    assert terminal.wait() == 0
    assert "━" in screen and "epoch 1/6" in screen, "the live progress bar was drawn on the terminal"
    assert "\x1b[" in screen, "a terminal gets colours"
    log_text = (run_dir / "train.log").read_text()
    assert "the terminal closed (SIGHUP" in log_text and "the run carries on, logging to train.log" in log_text
    assert "Traceback" not in log_text
    assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)


def test_on_hangup_stop_saves_exits_129_and_resumes_to_the_same_metrics(tmp_path, unstopped):
    run_dir = tmp_path / "run"
    terminal = PseudoTerminal([str(VL_TRAIN), *LONG, "trainer.on_hangup=stop", f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_position(run_dir, terminal.process, lambda position: position["epoch"] >= 2)
    terminal.hang_up()

    assert terminal.wait() == 128 + signal.SIGHUP
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "interrupted" and metrics["test/acc"] is None
    assert (run_dir / "last.pt").is_file()
    assert "stopped by SIGHUP" in (run_dir / "train.log").read_text()

    resumed = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing({**unstopped})


def test_nohup_keeps_the_hangup_ignored(tmp_path, unstopped):
    run_dir = tmp_path / "run"
    terminal = PseudoTerminal([shutil.which("nohup"), str(VL_TRAIN), *LONG, f"hydra.run.dir={run_dir}"], tmp_path)
    wait_for_position(run_dir, terminal.process, lambda position: position["epoch"] >= 2)
    terminal.hang_up()

    assert terminal.wait() == 0
    assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)
    assert "the terminal closed" not in (run_dir / "train.log").read_text(), "nohup's ignore stays: no hangup was seen"
    assert "run directory:" in (tmp_path / "nohup.out").read_text()


def test_a_closed_pipe_does_not_stop_the_run(tmp_path, unstopped):
    """`vl-train ... | head -2`: head exits, every later write to the pipe fails with EPIPE."""
    run_dir = tmp_path / "run"
    command = f"'{VL_TRAIN}' {' '.join(LONG)} hydra.run.dir={run_dir} | head -2; exit ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2
    assert "stdout stopped taking output (EPIPE)" in (run_dir / "train.log").read_text()
    assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)


@pytest.mark.parametrize("redirect", [">/dev/full 2>/dev/full", ">&- 2>&-"], ids=["full", "closed"])
def test_a_full_or_closed_stdout_does_not_stop_the_run(tmp_path, redirect):
    run_dir = tmp_path / "run"
    command = f"'{VL_TRAIN}' {' '.join(TINY)} model=linear hydra.run.dir={run_dir} {redirect}"
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0
    assert read_metrics(run_dir)["status"] == "completed"
    assert (run_dir / "summary.md").is_file()


def test_a_reader_that_stops_reading_does_not_stall_the_run(tmp_path):
    """A paused `| less`: the pipe fills, and the run must neither wait for it nor lose its files."""
    run_dir = tmp_path / "run"
    reader, writer = os.pipe()  # nobody reads `reader` until the run has finished
    args = [*TINY, "model=linear", "trainer.epochs=40", "trainer.log_every_n_steps=1"]
    process = subprocess.Popen(
        [str(VL_TRAIN), *args, f"hydra.run.dir={run_dir}"], cwd=tmp_path, stdout=writer, stderr=writer
    )
    os.close(writer)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "metrics.json").exists():
            assert time.monotonic() < deadline, "the run stalled on a full pipe"
            time.sleep(0.1)
        assert process.wait(timeout=30) == 0
    finally:
        os.close(reader)
    assert read_metrics(run_dir)["status"] == "completed"


@pytest.mark.parametrize("on_hangup", ["continue", "stop"])
def test_killing_the_tmux_session_mid_epoch(tmp_path, unstopped, on_hangup):
    """What someone whose SSH connection dropped meets, through a real terminal multiplexer."""
    run_dir = tmp_path / "run"
    command = f"'{VL_TRAIN}' {' '.join(LONG)} trainer.on_hangup={on_hangup} hydra.run.dir={run_dir}; sleep 60"
    with tmux_session(command, tmp_path) as screen_now:
        wait_for_position(run_dir, None, lambda position: position["epoch"] >= 2)
        screen = screen_now()
        assert "━" in screen and "epoch 2/6" in screen, screen  # the live bar, as the user saw it
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.json").exists():
        assert time.monotonic() < deadline, (run_dir / "train.log").read_text()
        time.sleep(0.1)
    time.sleep(0.5)
    log_text = (run_dir / "train.log").read_text()
    if on_hangup == "continue":
        assert "the terminal closed (SIGHUP; stdout and stderr now go nowhere) at epoch" in log_text, log_text
        assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)
    else:  # the shell died with the session, so the run's own files say how it ended (exit 129: the pty test)
        assert "stopped by SIGHUP" in log_text and read_metrics(run_dir)["status"] == "interrupted"
        assert (run_dir / "last.pt").is_file()
        resumed = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
        assert resumed.returncode == 0, resumed.stderr
        assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)


def test_killing_the_gnu_screen_session_mid_epoch(tmp_path, unstopped):
    """The course's notes train in GNU screen: `screen -X quit` hangs up the run's terminal mid-epoch,
    behind the live bar."""
    screen = ensure_debian_package("screen")
    run_dir = tmp_path / "run"
    session = f"vl{os.getpid()}screen"
    command = f"'{VL_TRAIN}' {' '.join(LONG)} hydra.run.dir={run_dir}; sleep 60"
    subprocess.run(
        [screen, "-dmS", session, "bash", "-c", command],
        cwd=tmp_path,
        check=True,
        env={**os.environ, "TERM": "xterm-256color"},
    )
    try:
        wait_for_position(run_dir, None, lambda position: position["epoch"] >= 2)
    finally:
        subprocess.run([screen, "-S", session, "-X", "quit"], capture_output=True)
    deadline = time.monotonic() + 120
    while not (run_dir / "metrics.json").exists():
        assert time.monotonic() < deadline, (run_dir / "train.log").read_text()
        time.sleep(0.1)
    log_text = (run_dir / "train.log").read_text()
    assert "the terminal closed (SIGHUP; stdout and stderr now go nowhere) at epoch" in log_text, log_text
    assert without_timing(read_metrics(run_dir)) == without_timing(unstopped)


def test_a_closed_pipe_stops_no_job_of_a_kfold_sweep(tmp_path):
    """`vl-train -m ... split=kfold | head -1`: every job of the sweep and every fold still finishes."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        *TINY,
        "model=linear,mlp",
        "split=kfold",
        "split.folds=2",
        "trainer.epochs=1",
        f"hydra.sweep.dir={sweep}",
    ]
    command = f"'{VL_TRAIN}' {' '.join(args)} | head -1; exit ${{PIPESTATUS[0]}}"
    result = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert [read_metrics(sweep / job)["status"] for job in ("0", "1")] == ["completed", "completed"]
    assert (sweep / "summary.csv").is_file()
