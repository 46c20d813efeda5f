"""Where a run came from: the code, the machine and the data it ran with (docs/architecture.md, "Provenance").

Students pass checkpoints and run folders to each other, and a result's last digits depend on more
than its config: the torch build, the device, the CPU's vector instructions, the data files. A run
writes this record to provenance.json when it starts and every checkpoint carries it, so a lone
best.pt still says where it came from; `resume=`, `vl-eval` and `vl-predict` say in one line what
differs on the machine they run on, and nothing when nothing does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import visionlab
from visionlab.data.files import DataFiles

if TYPE_CHECKING:
    from visionlab.checkpoint_format import Checkpoint

log = logging.getLogger("visionlab")

FILE = "provenance.json"
# CPU flags (x86, then Arm) under which torch computes differently: fused multiply-add, wider vectors, bf16 in hardware
NUMERIC_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
    "sve2",
    "bf16",
)
WHOLE_BYTES = 256 * 2**20  # data up to this size, in up to MOST_FILES files, is hashed whole
MOST_FILES = 1000  # files whose content is hashed, at most
END = 64 * 2**10  # of more data, the first and last this many bytes of each of those files
GIT_SECONDS = 2


def record(device: torch.device, files: DataFiles | None) -> dict[str, Any]:
    """This session's code, environment and data: plain values, so a checkpoint holding it loads with weights_only."""
    cuda = device.type == "cuda"
    return {
        "visionlab": visionlab.__version__,
        **git_state(),
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion: weights_only refuses
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,  # asking loads cuDNN: only where the run uses it
        "device": device.type,
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        **cpu(),
        "data": fingerprint(files) if files is not None else None,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def git_state() -> dict[str, Any]:
    """The commit of the checkout visionlab runs from, and whether its tracked files were changed; null outside one.

    A package installed into a virtual environment inside some other checkout is not tracked by it: null too.
    """
    source = Path(visionlab.__file__).parent
    if not git(source, "ls-files", "--", "__init__.py"):
        return {"commit": None, "dirty": None}
    lines = (git(source, "status", "--porcelain=v2", "--branch", "--untracked-files=no") or "").splitlines()
    commit = next((line.split()[2] for line in lines if line.startswith("# branch.oid ")), None)
    if commit is None or commit == "(initial)":
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": any(not line.startswith("#") for line in lines)}


def git(folder: Path, *args: str) -> str | None:
    """git's output in `folder`, or None: no git, not a checkout, too slow, any failure."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=GIT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def cpu() -> dict[str, Any]:
    """The CPU's name, the kernels torch picks on it, and its flags that change numerics (None: no /proc/cpuinfo)."""
    fields = cpuinfo()
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "cpu": fields.get("model name") or platform.processor() or platform.machine(),
        "cpu_kernels": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": [flag for flag in NUMERIC_FLAGS if flag in flags] if fields else None,
    }


def cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo; empty where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    first = text.strip().split("\n\n", 1)[0]
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


def fingerprint(files: DataFiles) -> dict[str, Any]:
    """SHA-256 of the data files at a bounded cost (docs/architecture.md, "Provenance").

    Always each file's relative path and size, so a file added, removed, renamed or resized changes it;
    then content: every byte while the files total at most WHOLE_BYTES and number at most MOST_FILES
    (MNIST's, CIFAR's, a small folder), else the first and last END bytes of MOST_FILES files spread
    evenly over the sorted list, so a big photo folder costs at most 1,000 opens and 128 MiB read.
    """
    sizes = files.sizes if files.sizes is not None else [size_of(files.root / name) for name in files.names]
    listed = sorted(zip(files.names, sizes))
    total = sum(max(size, 0) for _, size in listed)
    whole = total <= WHOLE_BYTES and len(listed) <= MOST_FILES
    digest = hashlib.sha256()
    for name, size in listed:
        digest.update(f"{name}\0{size}\n".encode())
    count = len(listed)
    picked = range(count) if count <= MOST_FILES else [i * count // MOST_FILES for i in range(MOST_FILES)]
    for index in picked:
        name, size = listed[index]
        add_content(digest, files.root / name, size, whole)
    content = "all" if whole else f"the first and last {END // 1024} KiB of {len(picked):,} files"
    return {
        "sha256": digest.hexdigest(),
        "files": len(listed),
        "bytes": total,
        "content": content,
        "root": str(files.root),
    }


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def add_content(digest: Any, path: Path, size: int, whole: bool) -> None:
    """The file's bytes (or its two ends) into `digest`; an unreadable file is the dataset's to report."""
    try:
        with open(path, "rb") as f:
            if whole or size <= 2 * END:
                while chunk := f.read(2**20):
                    digest.update(chunk)
            else:
                digest.update(f.read(END))
                f.seek(-END, os.SEEK_END)
                digest.update(f.read(END))
    except OSError:
        digest.update(b"\0unreadable\0")


# ---- saying what differs ------------------------------------------------------------------------


def differences(then: dict[str, Any], now: dict[str, Any]) -> str | None:
    """One line naming what differs between a checkpoint's record and this session's; None when nothing that
    changes results does (the time of recording, where the data lies and the like never count)."""
    changed = [
        group for group, keys in compared(then, now).items() if any(value(then, key) != value(now, key) for key in keys)
    ]
    if not changed:
        return None
    made, current = (describe(record, changed) for record in (then, now))
    made = made if made.startswith("on ") else f"with {made}"
    consequences = ", and ".join(dict.fromkeys(CONSEQUENCES.get(group, LAST_DIGITS) for group in changed))
    return f"this checkpoint was made {made}, now {current}: {consequences}"


def tell(then: dict[str, Any] | None, now: dict[str, Any]) -> bool:
    """Log the line of `differences`, if any (a checkpoint from before provenance was recorded: none)."""
    line = differences(then, now) if then else None
    if line:
        log.warning("%s", line)
    return line is not None


def compared(then: dict[str, Any], now: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """The keys that count for these two records, by group."""
    on_gpus = then.get("device") == now.get("device") == "cuda"
    return {
        "code": ("visionlab", "commit", "dirty") if then.get("commit") and now.get("commit") else ("visionlab",),
        "python": ("python",),
        "torch": ("torch",),
        "cuda": ("cuda", "cudnn") if on_gpus else (),
        # a GPU run's numbers do not depend on its host's CPU
        "device": ("device", "gpu") if on_gpus else ("device", "gpu", "cpu", "cpu_kernels", "cpu_flags"),
        "data": ("data.sha256",) if then.get("data") and now.get("data") else (),
    }


def value(r: dict[str, Any], key: str) -> Any:
    """`r[key]`, where "a.b" is `r["a"]["b"]`."""
    for part in key.split("."):
        r = r.get(part) if isinstance(r, dict) else None
    return r


def code_phrase(r: dict[str, Any]) -> str:
    if not r.get("commit"):
        return f"visionlab {r.get('visionlab')}"
    changes = ", with uncommitted changes" if r.get("dirty") else ""
    return f"visionlab {r.get('visionlab')} (commit {r['commit'][:10]}{changes})"


def device_phrase(r: dict[str, Any]) -> str:
    if r.get("device") != "cpu":
        return f"on {r.get('device')}" + (f" {r['gpu']}" if r.get("gpu") else "")
    flags = r.get("cpu_flags")
    listed = "no vector flags" if flags == [] else ", ".join(flags or [])
    inside = "; ".join(part for part in (listed, f"{r.get('cpu_kernels')} kernels") if part)
    return f"on cpu {r.get('cpu')} ({inside})"


def data_phrase(r: dict[str, Any]) -> str:
    data = r["data"]
    return f"data {data['sha256'][:12]} ({data['files']:,} files, {data['bytes']:,} bytes)"


PHRASES = {
    "code": code_phrase,
    "python": lambda r: f"Python {r.get('python')}",
    "torch": lambda r: f"torch {r.get('torch')}",
    "cuda": lambda r: f"CUDA {r.get('cuda')}, cuDNN {r.get('cudnn')}",
}
CONSEQUENCES = {"code": "the code differs", "data": "the data files differ"}
LAST_DIGITS = "the last digits can differ"  # what any other difference means


def describe(r: dict[str, Any], changed: list[str]) -> str:
    """One side of the line: the versions that differ, then the device, then the data."""
    versions = ", ".join(PHRASES[group](r) for group in changed if group in PHRASES)
    text = " ".join(part for part in (versions, device_phrase(r) if "device" in changed else "") if part)
    if "data" in changed:
        text = f"{text} and {data_phrase(r)}" if text else data_phrase(r)
    return text


# ---- the run's file -----------------------------------------------------------------------------


def start(run_dir: Path, device: torch.device, files: DataFiles | None, resumed: Checkpoint | None) -> dict:
    """This session's record, for its checkpoints; written to provenance.json. A resumed run (`resumed`: the
    checkpoint it carries on from) says what differs, and keeps the earlier sessions' records under "earlier"."""
    now = record(device, files)
    path = run_dir / FILE
    before = read(path) if resumed is not None else None
    differs = resumed is not None and tell(resumed.provenance, now)
    if before is not None and not differs:
        return now  # the file says it already
    earlier = [*before.pop("earlier", []), before] if before else []
    write(path, {**now, "earlier": earlier} if earlier else now)
    return now


def read(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def write(path: Path, content: dict[str, Any]) -> None:
    """Atomically, so a kill never leaves half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(content, indent=2) + "\n")
    os.replace(temporary, path)
