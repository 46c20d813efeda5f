"""visionlab from Python (docs/api.md): the run vl-train makes, library manners, and a real Jupyter kernel."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import nbformat
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from jupyter_client.manager import start_new_kernel
from nbclient import NotebookClient
from PIL import Image

import visionlab
from tests.conftest import REPO, TINY, run_cli
from visionlab.errors import UserError

NOTEBOOK = REPO / "docs" / "examples" / "quickstart.ipynb"


def run_files(folder: Path) -> list[str]:
    """The files of a run folder, TensorBoard's event files named by kind (their names hold a time and a pid)."""
    return sorted(
        re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents", str(p.relative_to(folder)))
        for p in folder.rglob("*")
        if p.is_file()
    )


def test_train_from_python_is_the_run_vl_train_makes(tmp_path):
    args = ["model=linear", "trainer.epochs=1", "seed=3"]
    cli = run_cli(args, tmp_path / "cli")
    assert cli.returncode == 0, cli.stderr
    script = (
        "import json, visionlab\n"
        f"run = visionlab.train(*{args!r}, 'hydra.run.dir={tmp_path / 'api'}')\n"
        "print(json.dumps(run.metrics))\n"
    )
    api = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert api.returncode == 0, api.stderr
    from_cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())
    from_api = json.loads(api.stdout.strip().splitlines()[-1])
    assert from_api["test/acc"] is not None and from_api["status"] == "completed"
    assert {k: v for k, v in from_api.items() if k != "seconds"} == {
        k: v for k, v in from_cli.items() if k != "seconds"
    }
    assert run_files(tmp_path / "api") == run_files(tmp_path / "cli")
    assert (tmp_path / "api" / ".hydra" / "config.yaml").read_text() == (
        tmp_path / "cli" / ".hydra" / "config.yaml"
    ).read_text()


def process_state() -> dict:
    """What a library call must leave as it found it."""
    return {
        "signals": {
            s: signal.getsignal(s) for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)
        },
        "loggers": {
            name: (logger.level, list(logger.handlers), logger.propagate)
            for name, logger in [("", logging.getLogger()), *logging.Logger.manager.loggerDict.items()]
            if isinstance(logger, logging.Logger)
        },
        "threads": sorted(t.name for t in threading.enumerate()),
        "torch_threads": torch.get_num_threads(),
        "environment": dict(os.environ),
        "argv": list(sys.argv),
        "streams": (sys.stdout, sys.stderr),
        "excepthook": threading.excepthook,
        "hydra": (GlobalHydra.instance().is_initialized(), HydraConfig.initialized()),
        "cwd": os.getcwd(),
    }


def unchanged(before: dict) -> bool:
    """The state as before, loggers that first import made during the call aside (a library's own)."""
    now = process_state()
    now["loggers"] = {name: state for name, state in now["loggers"].items() if name in before["loggers"]}
    return now == before


def test_each_call_leaves_the_process_as_it_found_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(2)
    visionlab.train(*TINY, "model=linear", "logging=none", f"hydra.run.dir={tmp_path / 'warm'}")  # first imports
    before = process_state()
    first = visionlab.train(*TINY, "model=linear", f"hydra.run.dir={tmp_path / 'first'}")
    assert unchanged(before)
    with open(first.folder / ".lock", "a+") as lock:  # train.log's handler closed: the folder is free
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)

    second = visionlab.train(*TINY, "model=linear", f"hydra.run.dir={tmp_path / 'second'}")
    assert second.folder != first.folder
    assert {k: v for k, v in second.metrics.items() if k != "seconds"} == {
        k: v for k, v in first.metrics.items() if k != "seconds"
    }

    refusals = [
        ["trainer.epocs=2"],  # Hydra refuses the override
        ["trainer.epochs=-1", f"hydra.run.dir={tmp_path / 'third'}"],  # the config check refuses it, inside the job
        [f"hydra.run.dir={first.folder}"],  # the folder holds a run: refused by its lock's handler
        ["dataset=folder", f"dataset.root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'third'}"],
    ]
    for overrides in refusals:
        with pytest.raises(UserError) as refused:
            visionlab.train(*TINY, *overrides)
        assert "\n" not in str(refused.value)
        assert unchanged(before), overrides
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "second", "third", "warm"]


@pytest.mark.parametrize(
    "overrides",
    [["trainer.epocs=2"], ["model=cnnn"], ["optimizer.lr=-1"], ["dataset=folder", "dataset.root=/nowhere/at/all"]],
)
def test_a_refused_value_raises_the_line_vl_train_prints(tmp_path, overrides):
    cli = run_cli([*TINY, *overrides], tmp_path / "cli")
    assert cli.returncode == 2
    printed = cli.stderr.strip().splitlines()[-1]
    with pytest.raises(UserError) as refused:
        visionlab.train(*TINY, *overrides, f"hydra.run.dir={tmp_path / 'cli'}")
    assert printed.endswith(f"error: {refused.value}")


def test_train_refuses_a_sweep_and_predict_refuses_what_is_no_image(tmp_path):
    with pytest.raises(UserError, match=r"visionlab\.sweep"):
        visionlab.train("-m", "optimizer.lr=0.1,0.01")
    run = visionlab.train(*TINY, "model=linear", "logging=none", f"hydra.run.dir={tmp_path / 'run'}")
    with pytest.raises(UserError, match=r"image 0 is a tensor of shape \(28, 28\)"):
        visionlab.predict(run, [torch.zeros(28, 28)])
    with pytest.raises(UserError, match="top_k=0 is invalid"):
        visionlab.predict(run, [torch.zeros(1, 28, 28)], top_k=0)


def test_evaluate_and_predict_take_a_run_its_folder_and_images_in_memory(tmp_path):
    run = visionlab.train(*TINY, "model=cnn", "logging=none", f"hydra.run.dir={tmp_path / 'run'}")
    scored = visionlab.evaluate(run, split="test")
    assert scored["test/acc"] == run.metrics["test/acc"]
    assert len(list(run.folder.glob("eval_*_test.json"))) == 1
    assert visionlab.evaluate(str(run.folder), split="val")["val/acc"] == run.metrics["val/acc"]

    grey = Image.new("L", (56, 56), color=0)
    grey.paste(255, (20, 0, 36, 56))  # a vertical bar, one of the synthetic classes
    batch = torch.zeros(2, 1, 28, 28)
    batch[:, :, :, 10:18] = 1.0
    found = visionlab.predict(run.folder, [grey, batch], top_k=3)
    assert [row["image"] for row in found] == ["image 0", "image 1", "image 2"]
    assert all(len(row["top"]) == 3 and row["top"][0] == [row["predicted"], row["probability"]] for row in found)
    assert sum(p for _, p in found[0]["top"]) <= 1.0 + 1e-6
    assert found[0]["note"] == "resized from 56x56 to 28x28"
    assert found[1]["predicted"] == found[2]["predicted"]  # the same image twice, the same answer
    (tmp_path / "mine").mkdir()
    grey.save(tmp_path / "mine" / "bar.png")
    from_files = visionlab.predict(run, tmp_path / "mine", out=tmp_path / "predictions")
    assert from_files[0]["image"] == str(tmp_path / "mine" / "bar.png")
    assert from_files[0]["predicted"] == found[0]["predicted"]
    assert (tmp_path / "predictions" / "predictions.csv").is_file()


def test_a_run_folder_reads_back_with_its_history_and_pictures(tmp_path):
    run = visionlab.train(*TINY, "model=cnn", f"hydra.run.dir={tmp_path / 'run'}")
    opened = visionlab.open_run(tmp_path / "run")
    assert opened.metrics == run.metrics and opened.status == "completed"
    assert [row["step"] for row in opened.history] == [run.metrics["steps"] // 2, run.metrics["steps"]]
    assert opened.history[-1]["val/acc"] == pytest.approx(run.metrics["val/acc"])
    assert opened.config.model._target_ == "visionlab.models.cnn.CNN"
    assert set(opened.checkpoints) == {"last", "best"}
    assert "val/confusion_matrix" in opened.pictures
    picture = opened.picture("val/confusion_matrix")
    assert picture.size[0] > 100 and picture.size[1] > 100
    with pytest.raises(UserError, match="is not a picture of"):
        opened.picture("val/nothing")
    with pytest.raises(UserError, match="holds no run"):
        visionlab.open_run(tmp_path)


def test_a_sweep_returns_its_jobs_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = visionlab.sweep(*TINY, "model=linear", "logging=none", "optimizer.lr=0.1,0.01,0.001")
    assert [run.config.optimizer.lr for run in runs] == [0.1, 0.01, 0.001]
    assert [run.folder.name for run in runs] == ["0", "1", "2"]
    assert all(run.status == "completed" for run in runs)
    assert (runs[0].folder.parent / "summary.csv").is_file()

    with pytest.raises(UserError, match="model.k") as refused:  # as vl-train: the other jobs run, then it fails
        visionlab.sweep(*TINY, "model=knn", "model.k=1,0", f"hydra.sweep.dir={tmp_path / 'failing'}")
    assert refused.value.run_dir == tmp_path / "failing" / "1"
    assert json.loads((tmp_path / "failing" / "0" / "metrics.json").read_text())["status"] == "completed"


def execute(client, code: str, timeout: float = 300) -> list[dict]:
    """Run `code` in the kernel; its output messages, once it is idle again."""
    return collect(client, client.execute(code), timeout)


def collect(client, msg_id: str, timeout: float = 300) -> list[dict]:
    outputs, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.get_iopub_msg(timeout=timeout)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return outputs
        outputs.append(message)
    raise AssertionError(f"no end of {msg_id} within {timeout} s")


def text_of(outputs: list[dict]) -> str:
    return "".join(m["content"].get("text", "") for m in outputs if m["msg_type"] == "stream")


def test_interrupting_the_kernel_saves_last_pt_and_raises_keyboard_interrupt(tmp_path):
    manager, client = start_new_kernel(cwd=str(tmp_path))
    try:
        assert not [
            m
            for m in execute(client, "import signal, visionlab\nbefore = signal.getsignal(signal.SIGINT)")
            if m["msg_type"] == "error"
        ]
        run_dir = tmp_path / "run"
        # short epochs, many of them: the interrupt lands long before the end, and the resume is quick
        code = (
            "visionlab.train('model=cnn', 'dataset.train_size=600', 'dataset.test_size=200', 'trainer.epochs=8', "
            f"'trainer.early_stopping.patience=null', 'logging=none', 'hydra.run.dir={run_dir}')"
        )
        msg_id = client.execute(code)
        deadline = time.monotonic() + 120
        while "epoch 1/8" not in ((run_dir / "train.log").read_text() if (run_dir / "train.log").exists() else ""):
            assert time.monotonic() < deadline, "the run never finished its first epoch"
            time.sleep(0.1)
        manager.interrupt_kernel()
        errors = [m["content"] for m in collect(client, msg_id) if m["msg_type"] == "error"]
        assert [e["ename"] for e in errors] == ["KeyboardInterrupt"]
        assert f"last.pt saved: visionlab.train('resume={run_dir}') carries on" in errors[0]["evalue"]
        assert json.loads((run_dir / "metrics.json").read_text())["status"] == "interrupted"
        assert (run_dir / "last.pt").is_file()

        after = execute(client, "print(signal.getsignal(signal.SIGINT) is before)")
        assert text_of(after).strip() == "True"
        resumed = execute(
            client, f"run = visionlab.train('resume={run_dir}')\nprint(run.status, run.metrics['epochs'])"
        )
        assert [m["content"]["ename"] for m in resumed if m["msg_type"] == "error"] == []
        assert text_of(resumed).strip().splitlines()[-1] == "completed 8"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_the_quickstart_notebook_runs_in_a_real_kernel(tmp_path):
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    parameters = next(cell for cell in notebook.cells if "parameters" in cell.metadata.get("tags", []))
    parameters.source = 'DATASET = "synthetic"\nEPOCHS = 2'
    NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        iopub_timeout=120,  # a loaded machine delays the kernel's output: wait for it, and fail rather than lose it
        raise_on_iopub_timeout=True,
    ).execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]

    def printed(start: str) -> str:
        cell = next(c for c in code if c.source.startswith(start))
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    table = printed("runs = ").strip().splitlines()
    assert [line.split()[0] for line in table] == ["kNN", "linear", "MLP", "CNN"]
    accuracies = {line.split()[0]: float(line.split()[2]) for line in table}
    assert all(0.2 < acc <= 1.0 for acc in accuracies.values()), accuracies  # chance is 0.1
    assert accuracies["CNN"] > 0.9
    assert len(printed("for row in cnn.history").strip().splitlines()) == 2  # EPOCHS rows
    sweep = [line for line in printed("sweep = ").splitlines() if line.startswith("lr ")]  # Hydra logs its jobs too
    assert [line.split()[1] for line in sweep] == ["0.001", "0.01", "0.1"]
    scored = re.findall(r"[\d.]+", printed("scored = "))
    assert scored[0] == scored[1]

    shows = [c for c in code if ".show(" in c.source]
    assert len(shows) == 2
    for cell in shows:
        assert any("image/png" in o.get("data", {}) for o in cell.outputs if o.output_type == "display_data")
    trained = next(c for c in code if c.source.startswith("linear = "))
    widgets = [o for o in trained.outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert widgets, "no progress bar widget"
    assert len(list((tmp_path / "outputs").glob("*/*/metrics.json"))) == 4
