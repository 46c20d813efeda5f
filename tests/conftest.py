"""Shared test helpers: the repo's real configs, the real CLI, and the shared datasets."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.cli_server import Server

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"
CIFAR_TOOL = REPO.parent / "shared" / "tools" / "cifar10-from-jpeg"
VL_TRAIN = Path(sys.executable).parent / "vl-train"

# Small and fast: a few hundred images, one or two epochs, one CPU thread per run.
TINY = [
    "dataset.train_size=600",
    "dataset.test_size=200",
    "trainer.epochs=2",
    "trainer.batch_size=64",
    "trainer.log_every_n_steps=5",
    "trainer.threads=1",
    "trainer.device=cpu",
]


def compose_train(overrides: list[str] = ()) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def config_error(overrides: list[str]) -> str:
    """The one-line message with which the real config, composed with `overrides`, is refused before any data loads."""
    from visionlab.config import validate
    from visionlab.errors import UserError

    with pytest.raises(UserError) as error:
        validate(compose_train(overrides))
    message = str(error.value)
    assert "\n" not in message
    return message


def signals_at_default() -> None:
    """A child process's `preexec_fn`: SIGINT and SIGHUP at their defaults, as a user's shell gives them. A suite
    started in the background (`make test &`) inherits SIGINT ignored, one started with nohup SIGHUP, and an
    ignored signal stays ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_vl_train(
    args: list[str], run_dir: Path, env: dict | None = None, own_group: bool = False
) -> subprocess.Popen:
    """`vl-train args` into `run_dir`, a process of its own with SIGINT at its default and its stderr piped: for the
    tests that signal it. `own_group`: a process group of its own, as a terminal's job, so that what is sent to the
    group reaches every process it starts."""
    return subprocess.Popen(
        [str(VL_TRAIN), *args, f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        start_new_session=own_group,
        preexec_fn=signals_at_default,
    )


@pytest.fixture
def signals_as_from_a_shell() -> Iterator[None]:
    """In this process, SIGINT raises KeyboardInterrupt and SIGHUP is at its default, as Python has them when a
    user's shell starts it (signals_at_default)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler), signal.signal(signal.SIGHUP, signal.SIG_DFL)
    yield
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGHUP, previous[1])


def run_cli(
    args: list[str], run_dir: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `vl-train` as a user would (`vl_train`), with its run directory under tmp."""
    return vl_train([*args, f"hydra.run.dir={run_dir}"], run_dir.parent, timeout, env)


def vl_train(args: list[str], cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`vl-train args` in `cwd`, its output captured (run_tool)."""
    return run_tool("vl-train", args, cwd, timeout, env)


def run_tool(
    tool: str, args: list, cwd: Path, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`tool args` (vl-train, vl-eval, vl-predict, vl-report) in `cwd`, its output captured: forked from the
    worker's server (tests/cli_server.py), which has torch and visionlab loaded already. A sweep through a launcher
    of its own (its worker processes: joblib's loky wants a real parent), and a command with environment variables
    of its own (read when modules load), start a fresh process instead, as every command does with
    VL_TEST_FRESH_PROCESSES=1. The basic launcher runs a sweep's jobs in the command's own process."""
    launcher = any(str(arg).startswith(("hydra/launcher=", "+hydra/launcher=")) for arg in args)
    if env or launcher or os.environ.get("VL_TEST_FRESH_PROCESSES"):
        return subprocess.run(
            [str(VL_TRAIN.with_name(tool)), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    return cli_server().run(tool, args, cwd, dict(os.environ), timeout)


@functools.cache
def cli_server() -> Server:
    server = Server()
    atexit.register(server.close)
    return server


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def cpu_flags_unlike(flags: list[str] | None) -> list[str]:
    """Recorded CPU flags that differ from `flags` (this machine's): theirs with avx512_bf16 toggled. A fixed list
    would be some machine's own (a Zen 5 records exactly avx2, fma, avx512f and avx512_bf16), where no difference
    is found."""
    from visionlab.provenance import NUMERIC_FLAGS

    toggled = set(flags or []) ^ {"avx512_bf16"}
    return [flag for flag in NUMERIC_FLAGS if flag in toggled]


def cpu_has_native_bfloat16() -> bool:
    """The kernel's word, independent of torch's: this CPU lists AVX-512 BF16 or AMX BF16 among its flags."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    flags = {
        flag
        for line in cpuinfo.read_text().splitlines()
        if line.startswith("flags")
        for flag in line.split(":", 1)[1].split()
    }
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def without_timing(metrics: dict) -> dict:
    """metrics.json as two runs of the same seed must agree on, on the CPU: all but the seconds."""
    return {k: v for k, v in metrics.items() if k != "seconds"}


def metrics_of_a_run_left_alone(args: list[str], tmp_path_factory) -> dict:
    """The reference a stopped-and-resumed (or disturbed) run must end identical to."""
    run_dir = tmp_path_factory.mktemp("undisturbed") / "run"
    result = run_cli(args, run_dir)
    assert result.returncode == 0, result.stderr
    return read_metrics(run_dir)


def wait_for_position(
    run_dir: Path,
    process: subprocess.Popen | None,
    reached: Callable[[dict], bool],
    timeout: float = 120,
    checkpoint_glob: str = "last.pt",
) -> dict:
    """Wait until the run's last.pt (or the first match of `checkpoint_glob` under `run_dir`)
    holds a position (epoch, batch, step, partition) for which `reached` is true.

    A state of the run on disk, written atomically, rather than a printed line: however loaded the
    machine, the run is where the test thinks it is when this returns.
    """
    import torch

    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(
                f"the run ended (exit {process.returncode}) before reaching the state; last position {seen}"
            )
        checkpoint = next(run_dir.glob(checkpoint_glob), None) if run_dir.is_dir() else None
        if checkpoint is not None:
            try:
                state = torch.load(checkpoint, weights_only=True, map_location="cpu")
            except (OSError, RuntimeError, EOFError):  # replaced while being read: read the new one
                continue
            # partition: which fold of a k-fold run
            seen = {**state["position"], "partition": state.get("partition", 0)}
            if reached(seen):
                return seen
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach the state within {timeout} s; last position {seen}")


def pytest_collection_modifyitems(config, items) -> None:
    """Modules with a slow test first, every module's tests kept together and in order: with one
    worker per core (pytest-xdist, `--dist loadscope --no-loadscope-reorder`: modules go out in this
    order), the longest modules then start first instead of finishing alone at the end."""
    slow = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow)


@contextlib.contextmanager
def machine_lock(name: str) -> Iterator[None]:
    """Held by one test process at a time on this machine: the suite runs in parallel workers
    (pytest-xdist), and apt-get, or building a dataset once, must not run twice at the same time."""
    with open(Path("/tmp") / f"visionlab-tests-{name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def ensure_debian_package(command: str, package: str | None = None) -> str:
    """The path of `command`, installing its Debian package first if this machine allows (CI runs as root)."""
    found = shutil.which(command)
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip(
            f"{command} is not installed and this machine cannot install {package or command} (needs root and apt-get)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with machine_lock("apt"):
        installed = subprocess.run(
            ["apt-get", "install", "-y", "-q", package or command], capture_output=True, text=True, env=env, timeout=600
        )
        if installed.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, timeout=600)
            installed = subprocess.run(
                ["apt-get", "install", "-y", "-q", package or command],
                capture_output=True,
                text=True,
                env=env,
                timeout=600,
            )
    found = shutil.which(command)
    if not found:
        pytest.skip(
            f"{command} could not be installed: {installed.stderr.strip().splitlines()[-1:] or installed.returncode}"
        )
    return found


@contextlib.contextmanager
def tmux_session(command: str, cwd: Path, columns: int = 120, rows: int = 30) -> Iterator[Callable[[], str]]:
    """`command` in a detached tmux pane of that size, on a tmux server of its own (killed on the way out, which
    hangs the pane up as a dropped SSH connection would); yields a function that reads the pane's screen."""
    tmux = ensure_debian_package("tmux")
    session = f"vl{os.getpid()}{cwd.name[-12:]}"
    subprocess.run(
        [tmux, "-L", session, "new-session", "-d", "-s", session, "-x", str(columns), "-y", str(rows), command],
        cwd=cwd,
        check=True,
    )

    def screen() -> str:
        return subprocess.run(
            [tmux, "-L", session, "capture-pane", "-p", "-t", session], capture_output=True, text=True
        ).stdout

    try:
        yield screen
    finally:
        subprocess.run([tmux, "-L", session, "kill-server"], capture_output=True)


@pytest.fixture(autouse=True)
def runs_of_this_test_only(tmp_path_factory, monkeypatch) -> Path:
    """Each test's runs share the cores only with each other: the machine's other runs (other tests, other
    sessions) would change the threads a run takes and add oversubscription warnings (docs/architecture.md)."""
    folder = tmp_path_factory.mktemp("runs")
    monkeypatch.setenv("VL_RUNS_DIR", str(folder))
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(
            f"real MNIST not available: {SHARED_DATA / 'MNIST' / 'raw'} is absent (it lives in the workplace's "
            "shared/ folder)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def cifar_root() -> Path:
    """CIFAR-10 in its standard layout, rebuilt once per machine from the shared JPEG copy."""
    root = REPO / ".cache" / "cifar10"
    with machine_lock("cifar10"):
        if not (root / "cifar-10-batches-py" / "test_batch").is_file():
            if not CIFAR_TOOL.is_file():
                pytest.skip(
                    f"CIFAR-10 not available: {CIFAR_TOOL} is absent (it lives in the workplace's shared/ folder)"
                )
            subprocess.run([sys.executable, str(CIFAR_TOOL), str(root)], check=True, capture_output=True, timeout=600)
    return root
