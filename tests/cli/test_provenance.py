"""Real runs record where they came from (provenance.json, every checkpoint), and `vl-eval`, `vl-predict` and
`resume=` say in one line what differs where they run (docs/architecture.md, "Provenance")."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import visionlab
from tests.conftest import TINY, VL_TRAIN, cpu_flags_unlike, run_cli, run_tool, wait_for_position
from visionlab.provenance import NUMERIC_FLAGS

SAID = "this checkpoint was made"


def provenance_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "provenance.json").read_text())


def said(result: subprocess.CompletedProcess) -> list[str]:
    """The difference lines a command printed."""
    return [line for line in (result.stdout + result.stderr).splitlines() if SAID in line]


def vl_eval(checkpoint: Path) -> subprocess.CompletedProcess:
    result = run_tool("vl-eval", [checkpoint], checkpoint.parent, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


def edited(checkpoint: Path, to: Path, **changes) -> Path:
    """A copy of `checkpoint` whose stored provenance says `changes`, saved as a plain checkpoint again."""
    state = torch.load(checkpoint, weights_only=True)
    state["provenance"].update(changes)
    torch.save(state, to)
    return to


def test_a_run_records_its_code_and_environment_and_its_checkpoints_carry_them(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=linear", "trainer.epochs=1"], run_dir)
    assert result.returncode == 0, result.stderr
    recorded = provenance_of(run_dir)
    assert recorded["torch"] == str(torch.__version__) and recorded["python"] == platform.python_version()
    assert recorded["visionlab"] == visionlab.__version__ and recorded["device"] == "cpu" and recorded["gpu"] is None
    assert recorded["cuda"] == torch.version.cuda and recorded["cudnn"] is None  # cuDNN: CUDA runs only
    assert recorded["data"] is None  # dataset=synthetic reads no files
    assert (recorded["commit"] is None and recorded["dirty"] is None) or (
        re.fullmatch(r"[0-9a-f]{40}", recorded["commit"]) and recorded["dirty"] in (True, False)
    )
    assert recorded["cpu_flags"] is None or set(recorded["cpu_flags"]) <= set(NUMERIC_FLAGS)
    assert recorded["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    for name in ("last.pt", "best.pt"):
        assert torch.load(run_dir / name, weights_only=True)["provenance"] == recorded

    assert said(vl_eval(run_dir / "best.pt")) == []
    changed = edited(run_dir / "best.pt", tmp_path / "from_a_classmate.pt", torch="2.13.0")
    (line,) = said(vl_eval(changed))
    # only what differs
    assert line == f"{SAID} with torch 2.13.0, now torch {torch.__version__}: the last digits can differ"

    picture = tmp_path / "digit.png"
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(picture)
    predicted = run_tool("vl-predict", [changed, picture, "--out", tmp_path / "predictions"], tmp_path, timeout=120)
    assert predicted.returncode == 0, predicted.stderr
    assert said(predicted) == [line]


def write_photos(root: Path) -> None:
    """Two classes of noisy colour patches, PNG and JPEG."""
    rng = np.random.default_rng(0)
    for name, colour in {"red": (210, 40, 40), "blue": (40, 60, 200)}.items():
        (root / name).mkdir(parents=True)
        for i in range(6):
            pixels = (np.array(colour) + rng.integers(-25, 26, (16, 16, 3))).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


def test_a_folder_run_fingerprints_its_images_and_vl_eval_says_when_they_changed(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos)
    run_dir = tmp_path / "run"
    fast = ["model=knn", "trainer.device=cpu", "trainer.threads=1", "logging=none"]
    result = run_cli(["dataset=folder", f"dataset.root={photos}", *fast], run_dir)
    assert result.returncode == 0, result.stderr
    data = provenance_of(run_dir)["data"]
    images = [*(photos / "red").iterdir(), *(photos / "blue").iterdir()]
    assert data["files"] == 12 and data["bytes"] == sum(p.stat().st_size for p in images) and data["content"] == "all"
    assert re.fullmatch(r"[0-9a-f]{64}", data["sha256"]) and data["root"] == str(photos)
    assert torch.load(run_dir / "last.pt", weights_only=True)["provenance"]["data"] == data
    assert said(vl_eval(run_dir)) == []

    Image.fromarray(np.full((16, 16, 3), 128, dtype=np.uint8)).save(photos / "red" / "1.png")
    (line,) = said(vl_eval(run_dir))
    assert line.startswith(f"{SAID} with data {data['sha256'][:12]} (12 files, ")
    assert line.endswith(": the data files differ") and "torch" not in line


def test_resume_says_once_what_differs_from_the_stopped_run(tmp_path):
    run_dir = tmp_path / "run"
    process = subprocess.Popen(
        [str(VL_TRAIN), *TINY, "trainer.epochs=3", "trainer.batch_size=16", "model=cnn", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 128 + signal.SIGTERM
    untouched = tmp_path / "untouched"
    shutil.copytree(run_dir, untouched)
    started = provenance_of(run_dir)
    flags = cpu_flags_unlike(started["cpu_flags"])
    edited(run_dir / "last.pt", run_dir / "last.pt", torch="2.13.0", cpu_flags=flags)

    resumed = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    assert resumed.returncode == 0, resumed.stderr
    (line,) = said(resumed)
    assert "made with torch 2.13.0 on cpu" in line and "avx512_bf16" in line
    assert f"now torch {torch.__version__} on cpu" in line
    assert (run_dir / "train.log").read_text().count(SAID) == 1
    now = provenance_of(run_dir)
    assert now["earlier"] == [started]  # the first session's record, kept
    del now["earlier"]
    assert torch.load(run_dir / "last.pt", weights_only=True)["provenance"] == now

    again = run_cli([f"resume={untouched}"], tmp_path / "again")
    assert again.returncode == 0, again.stderr
    assert said(again) == [] and provenance_of(untouched) == started
