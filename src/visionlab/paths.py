"""Where the shipped configs are: inside the package when installed from a wheel, else the repository's conf/."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent


def config_dir() -> Path:
    installed = PACKAGE / "conf"  # setup.py copies the top-level conf/ here in a wheel
    return installed if (installed / "train.yaml").is_file() else PACKAGE.parents[1] / "conf"
