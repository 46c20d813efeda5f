"""provenance.py on its own: the data fingerprint, what counts as a difference, git where there is none."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

import visionlab
from tests.conftest import cpu_flags_unlike
from visionlab import provenance
from visionlab.data.files import DataFiles


def write_files(root: Path, sizes: dict[str, int]) -> DataFiles:
    """Files of seeded random bytes, as a dataset would name them."""
    generator = torch.Generator().manual_seed(0)
    for name, size in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        content = torch.randint(0, 256, (size,), generator=generator, dtype=torch.uint8)
        (root / name).write_bytes(content.numpy().tobytes())
    return DataFiles(root, list(sizes))


def change_byte(path: Path, offset: int) -> None:
    content = bytearray(path.read_bytes())
    content[offset] ^= 0xFF
    path.write_bytes(bytes(content))


def test_the_fingerprint_changes_with_the_content_and_names_only(tmp_path):
    files = write_files(tmp_path / "a", {"cat/1.png": 3000, "cat/2.png": 2000, "dog/1.jpg": 5000})
    first = provenance.fingerprint(files)
    assert first["files"] == 3 and first["bytes"] == 10_000 and first["content"] == "all"
    assert provenance.fingerprint(files) == first

    os.utime(tmp_path / "a" / "cat" / "1.png", (1, 1))  # a copy's new modification times are no change
    moved = tmp_path / "elsewhere"
    shutil.copytree(tmp_path / "a", moved)
    assert provenance.fingerprint(DataFiles(moved, list(reversed(files.names))))["sha256"] == first["sha256"]

    change_byte(moved / "dog" / "1.jpg", 2500)  # the same size, one byte in the middle
    assert provenance.fingerprint(DataFiles(moved, files.names))["sha256"] != first["sha256"]
    (tmp_path / "a" / "cat" / "2.png").rename(tmp_path / "a" / "cat" / "3.png")
    renamed = DataFiles(tmp_path / "a", ["cat/1.png", "cat/3.png", "dog/1.jpg"])
    assert provenance.fingerprint(renamed)["sha256"] != first["sha256"]


def test_many_files_are_sampled_and_large_ones_read_at_their_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "MOST_FILES", 4)
    files = write_files(tmp_path, {f"{i:02d}.bin": 3 * provenance.END for i in range(10)})
    sampled = provenance.fingerprint(files)
    assert sampled["content"] == "the first and last 64 KiB of 4 files" and sampled["files"] == 10

    change_byte(tmp_path / "00.bin", provenance.END + 10)  # the middle of a large file: the documented blind spot
    assert provenance.fingerprint(files)["sha256"] == sampled["sha256"]
    change_byte(tmp_path / "00.bin", 10)  # its first 64 KiB
    assert provenance.fingerprint(files)["sha256"] != sampled["sha256"]
    change_byte(tmp_path / "00.bin", 10)
    (tmp_path / "01.bin").write_bytes(b"shorter")  # a file that is not sampled, resized
    assert provenance.fingerprint(files)["sha256"] != sampled["sha256"]


def test_only_what_changes_results_is_a_difference():
    now = provenance.record(torch.device("cpu"), None)
    assert provenance.differences(dict(now, recorded="2020-01-01T00:00:00+00:00"), now) is None
    assert provenance.differences(dict(now, cuda="11.8", cudnn=8700), now) is None  # a CPU run does not use CUDA
    assert provenance.differences(dict(now, commit=None, dirty=None), now) is None  # no commit to compare: the version

    line = provenance.differences(dict(now, torch="2.13.0", cpu_flags=cpu_flags_unlike(now["cpu_flags"])), now)
    assert line.startswith("this checkpoint was made with torch 2.13.0 on cpu ")
    assert "avx512_bf16" in line and f"now torch {torch.__version__} on cpu" in line
    assert line.endswith(": the last digits can differ") and "Python" not in line

    gpu = dict(now, device="cuda", gpu="NVIDIA H100 80GB HBM3", cuda="13.0", cudnn=92400)
    assert provenance.differences(dict(gpu, cpu="another CPU", cpu_flags=[]), gpu) is None  # the GPU computes
    assert "CUDA 12.8, cuDNN 91000" in provenance.differences(dict(gpu, cuda="12.8", cudnn=91000), gpu)

    data = {"sha256": "a" * 64, "files": 4, "bytes": 100, "content": "all", "root": "/data"}
    assert provenance.differences(dict(now, data=dict(data, root="/mnt/copy")), dict(now, data=data)) is None
    changed = provenance.differences(dict(now, data=dict(data, sha256="b" * 64)), dict(now, data=data))
    assert changed == (
        f"this checkpoint was made with data {'b' * 12} (4 files, 100 bytes), "
        f"now data {'a' * 12} (4 files, 100 bytes): the data files differ"
    )


def test_no_checkout_or_no_git_is_null_not_an_error(tmp_path, monkeypatch):
    unpacked = tmp_path / "visionlab"  # as from a tarball: no .git above it
    unpacked.mkdir()
    (unpacked / "__init__.py").write_text("")
    monkeypatch.setattr(visionlab, "__file__", str(unpacked / "__init__.py"))
    assert provenance.git_state() == {"commit": None, "dirty": None}
    monkeypatch.undo()
    monkeypatch.setenv("PATH", str(tmp_path))  # no git on the PATH
    assert provenance.git_state() == {"commit": None, "dirty": None}


def test_a_package_inside_someone_elses_checkout_is_not_that_checkouts_commit(tmp_path, monkeypatch):
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for name, content in env.items():
        monkeypatch.setenv(name, content)
    package = tmp_path / ".venv" / "site-packages" / "visionlab"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (tmp_path / ".gitignore").write_text(".venv/\n")
    for args in (["init", "-q"], ["add", ".gitignore"], ["commit", "-q", "-m", "x"]):
        assert provenance.git(tmp_path, *args) is not None
    monkeypatch.setattr(visionlab, "__file__", str(package / "__init__.py"))
    assert provenance.git_state() == {"commit": None, "dirty": None}

    (tmp_path / ".gitignore").write_text("")  # now tracked: the checkout's commit, and dirty
    provenance.git(tmp_path, "add", ".")
    provenance.git(tmp_path, "commit", "-q", "-m", "y")
    clean = provenance.git_state()
    assert len(clean["commit"]) == 40 and clean["dirty"] is False
    (package / "__init__.py").write_text("x = 1\n")
    assert provenance.git_state() == {"commit": clean["commit"], "dirty": True}
