"""visionlab from Python: the runs `vl-train`, `vl-eval` and `vl-predict` make, called from a notebook or a script.

`train` runs exactly what `vl-train` runs with the same arguments (launch.py: one path for both), and returns the
`Run` its folder holds. Each call leaves the caller's process as it found it (isolation.py): no exit, no signal
handler, logging handler, Hydra state, thread count or environment change survives it. A refused value raises
`UserError` whose message is the line `vl-train` prints; Ctrl-C (a notebook's interrupt) stops a run cleanly, saves
last.pt and raises KeyboardInterrupt saying how to carry on. docs/api.md is the guide.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from visionlab import launch
from visionlab.errors import DiskFull, Interrupted, RunStopped, UserError
from visionlab.isolation import borrowed_process
from visionlab.runs import Run

ImageInput = str | Path | Image.Image | torch.Tensor


def train(*overrides: str, config_dir: str | Path | None = None) -> Run:
    """One run, as `vl-train *overrides` makes it: the same config, checks, run folder, files and numbers.

    `overrides` are vl-train's (`"model=cnn"`, `"optimizer.lr=0.01"`, `"resume=outputs/..."`); `config_dir` is
    a folder of your own configs (vl-train's --config-dir). Returns the finished run. Raises `UserError` for a
    refused value (its message is vl-train's line), `KeyboardInterrupt` when interrupted (last.pt saved: pass
    `resume=` the run's folder to carry on), and the run's own error otherwise (`Diverged`, `DiskFull`), with
    `.run_dir` naming its folder.
    """
    if {"-m", "--multirun"} & set(overrides):
        raise UserError("-m makes a sweep: call visionlab.sweep(...) with the same arguments")
    outcomes = _run(_arguments(overrides, config_dir))
    if not outcomes:
        raise UserError(f"{' '.join(overrides)}: no run was made (Hydra's --cfg, --info and --help only print)")
    return Run(outcomes[0].run_dir)


def sweep(*overrides: str, config_dir: str | Path | None = None) -> list[Run]:
    """A sweep, as `vl-train -m *overrides` runs it (`"optimizer.lr=0.1,0.01"`, `"hparams_search=mlp_optuna"`,
    `"hydra/launcher=joblib"`); the runs of its jobs that finished, in job order. The sweep report
    (summary.csv) is in the folder of the first run's parent."""
    _run(["-m", *_arguments(overrides, config_dir)])
    folder = launch.session.sweep_dir
    jobs = [] if folder is None else [job for job in folder.iterdir() if (job / "metrics.json").is_file()]
    return [Run(job) for job in sorted(jobs, key=lambda job: _natural(job.name))]


def open_run(folder: str | Path) -> Run:
    """A run folder made earlier, by vl-train, `train` or anyone: its metrics, history, config and pictures."""
    return Run(folder)


def evaluate(
    run: Run | str | Path,
    split: str = "test",
    checkpoint: str | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
) -> dict[str, Any]:
    """`vl-eval`: the run's model (a run, its folder or a checkpoint file) scored on `split` (test, val or train);
    `checkpoint` (last or best) picks a run folder's other file. Returns what vl-eval prints and writes beside the
    checkpoint (eval_<checkpoint>_<split>.json): accuracy, loss, per-class accuracy, the confusion matrix."""
    from visionlab import evaluation

    with borrowed_process(show_log=True):
        metrics = evaluation.evaluate_checkpoint(
            _path(run), split, list(overrides), _config_dirs(config_dir), _choice(checkpoint)
        )
        evaluation.write_report(metrics)
    return metrics


def predict(
    run: Run | str | Path,
    images: ImageInput | Iterable[ImageInput],
    top_k: int = 5,
    checkpoint: str | None = None,
    overrides: Sequence[str] = (),
    config_dir: str | Path | None = None,
    out: str | Path | None = None,
) -> list[dict[str, Any]]:
    """`vl-predict`: what the run's model says about `images`, prepared as its run prepared its own.

    `images`: image files, folders of them, PIL images, or `[C, H, W]` tensors (uint8, or floats in [0, 1]; a
    `[N, C, H, W]` batch is N images), one or a list. Returns one dict per image: `image`, `predicted`,
    `probability`, `top` (the `top_k` [class, probability] pairs) and `note` (what was done to it). With `out`,
    predictions.csv and predictions.png are written there as vl-predict writes them.
    """
    from visionlab import prediction as predictions

    if top_k < 1:
        raise UserError(f"top_k={top_k} is invalid: use a whole number of at least 1, such as 5")
    with borrowed_process(show_log=True):
        flat = [
            one
            for item in _image_list(images)
            for one in (predictions.image_files([str(item)]) if isinstance(item, str | Path) else [item])
        ]
        if not flat:
            raise UserError("no image given: give image files, folders of them, PIL images or [C, H, W] tensors")
        found = predictions.predict(
            _path(run),
            flat,
            list(overrides),
            top_k,
            None if out is None else Path(out),
            _config_dirs(config_dir),
            _choice(checkpoint),
            show=False,
        )
    return found.rows()


def _run(args: list[str]) -> list[launch.Outcome]:
    """launch.compose_and_run inside a borrowed process; a job's end raised as the exception a caller expects."""
    with borrowed_process():
        try:
            return launch.compose_and_run(args, guard_terminal=False)
        except (launch.JobEnded, launch.JobFailed) as ended:
            raise _raised(ended) from None
        except DiskFull as full:  # before the run started: the line vl-train prints
            full.args = (full.line(full.folder),)
            raise full.with_traceback(None) from None


def _raised(ended: launch.Ending) -> BaseException:
    """The exception for a job's end: what it says is what vl-train printed, plus where the run is."""
    reason, run_dir = ended.reason, ended.run_dir
    saved = (run_dir / "last.pt").exists()
    if isinstance(reason, Interrupted):
        carry_on = f"last.pt saved: visionlab.train('resume={run_dir}') carries on" if saved else "nothing saved"
        return KeyboardInterrupt(f"{reason} in {run_dir}; {carry_on}")
    if isinstance(reason, DiskFull):
        reason.args = (reason.line(run_dir),)
    if isinstance(reason, UserError | RunStopped):
        reason.run_dir = run_dir
        return reason.with_traceback(None)
    return reason  # a bug: its own traceback, as Python shows any other


def _arguments(overrides: Iterable[str], config_dir: str | Path | None) -> list[str]:
    bad = [o for o in overrides if not isinstance(o, str)]
    if bad:
        raise UserError(f"{bad[0]!r} is not an override: give strings such as 'model=cnn' or 'optimizer.lr=0.01'")
    return [*(["--config-dir", str(config_dir)] if config_dir is not None else []), *overrides]


def _config_dirs(config_dir: str | Path | None) -> list[str]:
    return [] if config_dir is None else [str(config_dir)]


def _path(run: Run | str | Path) -> Path:
    return run.folder if isinstance(run, Run) else Path(run).expanduser()


def _choice(checkpoint: str | None) -> str | None:
    from visionlab.evaluation import CHECKPOINT_CHOICES

    if checkpoint is not None and checkpoint not in CHECKPOINT_CHOICES:
        raise UserError(
            f"checkpoint={checkpoint!r} is unknown: use 'last' or 'best' (None: the one that took the test)"
        )
    return checkpoint


def _image_list(images: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    if isinstance(images, str | Path | Image.Image):
        return [images]
    if isinstance(images, torch.Tensor):
        return list(images) if images.dim() == 4 else [images]
    batches = (list(item) if isinstance(item, torch.Tensor) and item.dim() == 4 else [item] for item in images)
    return [one for batch in batches for one in batch]


def _natural(name: str) -> list[Any]:
    """Job folders 0, 1, ..., 10 in number order."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]
