"""The one thing pyproject.toml cannot say: ship the top-level conf/ inside the package, as visionlab/conf/.

conf/ stays the single source at the top of the repository (an editable install reads it there);
a wheel or a plain `pip install .` carries a copy, which `visionlab.paths.config_dir` finds first.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            target = Path(self.build_lib) / "visionlab" / "conf"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(Path(__file__).parent / "conf", target, ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildWithConfigs})
