"""A regular install (a built wheel, not an editable clone) carries its configs and runs from any folder."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from tests.conftest import REPO


def test_a_wheel_installed_into_a_fresh_environment_runs_the_default_job_elsewhere(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO), "-w", str(wheels)],
        check=True,
        capture_output=True,
        timeout=300,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("visionlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    shipped = {n.removeprefix("visionlab/conf/") for n in names if n.startswith("visionlab/conf/")}
    assert shipped == {str(p.relative_to(REPO / "conf")) for p in (REPO / "conf").rglob("*.yaml")}

    env_dir = tmp_path / "fresh"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    # torch and the rest from this environment (no second torch), but not its editable visionlab: a .pth
    # line adds a folder without running the .pth files in it.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run(
        [str(python), "-c", "import visionlab; print(visionlab.__file__)"],
        capture_output=True,
        text=True,
        cwd=elsewhere,
    )
    assert where.stdout.startswith(str(env_dir)), where
    run_dir = elsewhere / "run"
    result = subprocess.run(
        [str(env_dir / "bin" / "vl-train"), f"hydra.run.dir={run_dir}"],  # the default job, as `make train` runs it
        capture_output=True,
        text=True,
        timeout=300,
        cwd=elsewhere,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"
