"""A fork server for the suite's short commands: one process per test worker imports visionlab, Hydra and torch
once, and forks a child per command, which runs the command's own entry point (`vl-train`: cli.train, `vl-eval`,
`vl-predict`, `vl-report`: the console scripts pyproject.toml declares) as a fresh process would. A command then
costs a fork instead of Python's start and torch's import.

The child gets what a fresh `vl-train` gets: its own argv, working directory, environment, stdin (/dev/null),
stdout and stderr (files, so not a terminal, as with `capture_output=True`), and SIGINT as the test process
has it (ignored, when the suite started in the background). conftest.run_tool uses it where nothing the
command does depends on how its process started: a sweep (its launcher's worker processes), a command with
environment variables (read when modules load), and a test that sends signals or needs a terminal start a
real process instead.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import traceback
from importlib.metadata import entry_points
from pathlib import Path

BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1


def serve(path: str) -> None:
    """Answer one request at a time (a test worker runs one test at a time): fork, report the pid, then the
    child's exit status."""
    from visionlab import cli, experiment, prediction  # noqa: F401  what every command loads, loaded once here

    with contextlib.suppress(OSError, AttributeError):  # ends with the test worker that started it (Linux)
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    print("ready", flush=True)
    while True:
        connection, _ = listener.accept()
        with connection:
            request = json.loads(connection.makefile("r").readline())
            pid = os.fork()
            if pid == 0:
                listener.close()
                connection.close()
                run_in_child(request)
            connection.sendall(f"{pid}\n".encode())
            _, status = os.waitpid(pid, 0)
            connection.sendall(f"{os.waitstatus_to_exitcode(status)}\n".encode())


def run_in_child(request: dict) -> None:
    """Become the command: never returns to the server's loop."""
    code = 1
    try:
        os.setpgid(0, 0)  # its own process group, as the test's timeout kills it whole
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name in ((0, os.devnull), (1, request["stdout"]), (2, request["stderr"])):
            target = os.open(name, os.O_RDONLY if fd == 0 else os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(target, fd)
            os.close(target)
        signal.signal(signal.SIGINT, signal.SIG_IGN if request["sigint_ignored"] else signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        sys.argv = [str(BIN / request["tool"]), *request["args"]]
        (entry,) = entry_points(group="console_scripts", name=request["tool"])
        entry.load()()  # vl-train exits (patches.exit_without_teardown) after its atexit handlers and a flush
        code = 0
    except SystemExit as exc:  # a sweep, vl-eval and vl-predict exit the normal way: their atexit handlers run here
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


class Replies:
    """The server's answers, one number a line."""

    def __init__(self, connection: socket.socket):
        self.connection = connection
        self.pending = b""

    def number(self, timeout: float) -> int:
        self.connection.settimeout(timeout)
        while b"\n" not in self.pending:
            chunk = self.connection.recv(64)
            if not chunk:
                raise RuntimeError("the vl-train fork server closed the connection")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return int(line)


class Server:
    """The client side: one server process per test worker, started on first use."""

    def __init__(self) -> None:
        self.folder = tempfile.mkdtemp(prefix="vl-cli-server-")
        self.path = os.path.join(self.folder, "socket")
        self.process = subprocess.Popen(
            [sys.executable, __file__, self.path],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the vl-train fork server did not start (exit {self.process.wait()})")

    def run(
        self, tool: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float
    ) -> subprocess.CompletedProcess:
        command = [str(BIN / tool), *map(str, args)]
        with tempfile.TemporaryDirectory(dir=self.folder) as outputs:
            request = {
                "tool": tool,
                "args": command[1:],
                "cwd": str(cwd),
                "env": env,
                "stdout": os.path.join(outputs, "stdout"),
                "stderr": os.path.join(outputs, "stderr"),
                "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            }
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.connect(self.path)
                connection.sendall((json.dumps(request) + "\n").encode())
                replies = Replies(connection)
                pid = replies.number(timeout=60)
                try:
                    code = replies.number(timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    replies.number(timeout=60)  # the server has reaped it
                    raise subprocess.TimeoutExpired(command, timeout) from None
            stdout = Path(request["stdout"]).read_text(errors="replace")
            stderr = Path(request["stderr"]).read_text(errors="replace")
        return subprocess.CompletedProcess(command, code, stdout, stderr)

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


if __name__ == "__main__":
    serve(sys.argv[1])
