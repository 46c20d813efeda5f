"""metrics.json (docs/architecture.md, "metrics.json"): one flat object per run,
written atomically so a kill never leaves half a file.

A full disk leaves no temporary file either: the write raises DiskFull (errors.py) and the old file, if any, stays.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from visionlab.errors import writing


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path.parent, path.name), open(tmp, "w") as f:
            json.dump(clean, f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
