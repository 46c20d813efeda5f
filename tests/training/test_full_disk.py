"""A full disk is a clean stop: one line, exit 75, no temporary file, last.pt whole, and resume= ends identical.

The CLI tests run `vl-train` on a real tmpfs small enough to fill; mounting one needs root.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import (
    TINY,
    metrics_of_a_run_left_alone,
    read_metrics,
    run_cli,
    start_vl_train,
    wait_for_position,
    without_timing,
)
from visionlab.cache import PixelCache, TensorCache
from visionlab.checkpoint_format import load_checkpoint
from visionlab.console import RunLogFile, full_log_file
from visionlab.errors import DiskFull, no_space
from visionlab.reporting.metrics_file import write_metrics
from visionlab.training.checkpoint import Checkpoints, save_checkpoint

# 4 epochs of 38 steps of 16 images: filling the disk once epoch 2 is under way leaves the next checkpoint to fail.
LONG_EPOCHS = [
    *TINY,
    "trainer.epochs=4",
    "trainer.batch_size=16",
    "trainer.log_every_n_steps=3",
    "model=cnn",
    "trainer.early_stopping.patience=null",
]
LEFT_FREE = 600_000  # bytes: room for an epoch's TensorBoard events and log lines, not for the cnn's 1.2 MB last.pt


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 4 MB tmpfs: a real disk that a test can fill."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """A file that leaves `leave` bytes free on `disk` (or as near as its blocks allow)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "ab") as f:
        try:
            f.write(b"\0" * max(free - leave, 0))
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return filler


def stderr_lines(result_stderr: str) -> list[str]:
    return [line for line in result_stderr.splitlines() if line.strip()]


def test_no_space_is_told_by_errno_and_by_the_cause_torch_keeps():
    assert no_space(OSError(errno.ENOSPC, "No space left on device"))
    assert no_space(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not no_space(OSError(errno.EACCES, "Permission denied"))
    assert not no_space(RuntimeError("unexpected pos 704 vs 598"))
    with pytest.raises(Exception) as raised, open("/dev/full", "wb") as f:
        torch.save({"w": torch.zeros(100_000)}, f)
    assert no_space(raised.value)


def test_a_checkpoint_that_finds_no_space_names_its_size_and_leaves_the_old_one(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model": {"w": torch.ones(2)}, "config": {}})
    before = path.read_bytes()
    (tmp_path / ".last.pt.tmp").symlink_to("/dev/full")  # every write fails with ENOSPC
    with pytest.raises(DiskFull) as full:
        save_checkpoint(path, {"model": {"w": torch.zeros(500_000)}, "config": {}})
    assert str(full.value) == f"no space left on the disk of {tmp_path} for last.pt (about 2.0 MB)"
    assert "last.pt) is intact" in full.value.line(tmp_path) and f"resume={tmp_path}" in full.value.line(tmp_path)
    assert full.value.exit_code == 75 and full.value.status == "interrupted"
    assert path.read_bytes() == before
    assert not (tmp_path / ".last.pt.tmp").exists()


def test_metrics_json_that_finds_no_space_leaves_no_temporary_file(tmp_path):
    (tmp_path / "metrics.json.tmp").symlink_to("/dev/full")
    with pytest.raises(DiskFull, match="metrics.json"):
        write_metrics(tmp_path / "metrics.json", {"status": "interrupted"})
    assert list(tmp_path.iterdir()) == []


def test_a_full_log_file_goes_quiet_and_the_next_checkpoint_stops_the_run(tmp_path, capsys):
    handler = RunLogFile("/dev/full")  # every flush fails with ENOSPC
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        for _ in range(3):
            logging.getLogger("visionlab").warning("a line that does not fit")
        assert full_log_file() == Path("/dev/full")
        checkpoints = Checkpoints(tmp_path, "val/acc", {}, time.perf_counter())
        with pytest.raises(DiskFull, match="full"):
            checkpoints.save({"model": {"w": torch.ones(2)}})
    finally:
        root.removeHandler(handler)
        handler.close()
    assert load_checkpoint(tmp_path / "last.pt").model["w"].tolist() == [1.0, 1.0], "saved before stopping"
    assert "Logging error" not in capsys.readouterr().err


def test_caches_on_a_full_disk_stop_the_run_and_leave_no_temporary_file(small_disk):
    """Before training: its checkpoints would not fit either, and nothing is lost by stopping now."""
    fill(small_disk)
    key = {"dataset": "Synthetic", "split": "train"}
    with pytest.raises(DiskFull, match=f"disk of {small_disk} for the features cache Synthetic-train-"):
        TensorCache(small_disk).save(key, {"x": torch.zeros(100_000)})
    with pytest.raises(DiskFull, match=r"for the image cache Synthetic-train-\w+\.u8 \(3,000,000 bytes\)"):
        with PixelCache(small_disk).writing(key) as writer:
            writer.allocate((1000, 3, 1000))
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    return metrics_of_a_run_left_alone(LONG_EPOCHS, tmp_path_factory)


def test_a_checkpoint_that_finds_the_disk_full_stops_with_75_and_resume_ends_identical(small_disk, uninterrupted):
    run_dir = small_disk / "run"
    process = start_vl_train(LONG_EPOCHS, run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    process.send_signal(signal.SIGSTOP)  # the disk fills between two checkpoints, not during one
    try:
        assert not (run_dir / ".last.pt.tmp").exists(), "stopped between checkpoints"
        filler = fill(small_disk, leave=LEFT_FREE)
    finally:
        process.send_signal(signal.SIGCONT)
    assert process.wait(timeout=120) == 75
    lines = stderr_lines(process.stderr.read())
    assert len(lines) == 1, lines
    assert f"no space left on the disk of {run_dir} for last.pt (about 1.2 MB)" in lines[0]
    assert "(last.pt) is intact" in lines[0] and f"resume={run_dir}" in lines[0]
    assert not list(run_dir.rglob("*.tmp"))
    metrics = read_metrics(run_dir)
    position = load_checkpoint(run_dir / "last.pt").position
    assert metrics["status"] == "interrupted" and metrics["test/acc"] is None
    assert position["epoch"] >= 2 and metrics["epochs"] == position["epoch"], "the epoch whose checkpoint did not fit"

    filler.unlink()
    resumed = run_cli([f"resume={run_dir}"], small_disk / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(uninterrupted)


def test_a_disk_full_from_the_start_is_one_line_naming_the_run_folder(small_disk):
    fill(small_disk)
    run_dir = small_disk / "run"
    result = run_cli([*TINY, "model=linear"], run_dir)
    assert result.returncode == 75, result.stderr
    lines = stderr_lines(result.stderr)
    assert lines == [
        f"error: no space left on the disk of {run_dir} for the run's files; "  # its lock, the first write
        "no checkpoint was written yet: free some space and run again"
    ]
    assert not list(run_dir.rglob("*.tmp"))


def test_a_disk_that_fills_mid_run_never_shows_a_traceback(small_disk):
    """Whichever write meets the full disk first (TensorBoard's thread, train.log, a checkpoint),
    the run says it once."""
    run_dir = small_disk / "run"
    process = start_vl_train(LONG_EPOCHS, run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    fill(small_disk)
    assert process.wait(timeout=120) == 75
    stderr = process.stderr.read()
    lines = stderr_lines(stderr)
    assert len(lines) == 1 and f"no space left on the disk of {run_dir}" in lines[0], lines
    assert "Traceback" not in stderr and "Logging error" not in stderr and "Exception in thread" not in stderr
    assert not list(run_dir.rglob("*.tmp"))
    assert load_checkpoint(run_dir / "last.pt").position["epoch"] >= 2
