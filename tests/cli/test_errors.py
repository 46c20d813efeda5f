"""Bad input through the real commands: exit code 2 and one line naming the value and what is allowed.

Each row is a case a student or a script could hit. None may print a traceback, and each must
fail before any data is loaded when the config alone is wrong.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import TINY, VL_TRAIN, compose_train, run_cli, run_tool, vl_train, wait_for_position
from tests.test_config_checks import MISTYPED

NO_CUDA = not torch.cuda.is_available()


class NotAllowedInACheckpoint:
    """An arbitrary object: unpickling it would mean running code, so a safe load refuses it."""


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The broken files and folders the cases below point at."""
    root = tmp_path_factory.mktemp("inputs")
    empty = root / "empty"
    empty.mkdir()
    corrupt_mnist = root / "corrupt_mnist"
    (corrupt_mnist / "MNIST" / "raw").mkdir(parents=True)
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (corrupt_mnist / "MNIST" / "raw" / name).write_bytes(b"\x00\x00\x08\x03truncated")
    corrupt_cifar = root / "corrupt_cifar"
    (corrupt_cifar / "cifar-10-batches-py").mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (corrupt_cifar / "cifar-10-batches-py" / name).write_bytes(b"\x80\x04 not a pickle")
    truncated = root / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not a whole zip file")
    code = root / "code.pt"
    torch.save({"model": NotAllowedInACheckpoint(), "config": {}}, code)
    foreign = root / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    mismatched = root / "mismatched.pt"
    config = OmegaConf.to_container(compose_train([*TINY, "model=linear"]), resolve=True)
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}, "config": config}, mismatched)
    no_checkpoint = root / "no_checkpoint"
    no_checkpoint.mkdir()
    completed = root / "completed"
    completed.mkdir()
    (completed / "last.pt").write_bytes(b"")
    (completed / "metrics.json").write_text('{"status": "completed"}')
    read_only = root / "read_only"
    read_only.mkdir()
    read_only.chmod(0o500)
    return {
        "empty": empty,
        "corrupt_mnist": corrupt_mnist,
        "corrupt_cifar": corrupt_cifar,
        "truncated": truncated,
        "code": code,
        "foreign": foreign,
        "mismatched": mismatched,
        "no_checkpoint": no_checkpoint,
        "completed": completed,
        "read_only": read_only,
    }


# (id, command, arguments, expected words in the one error line). {name} is a path from `files`.
CASES = [
    # misspelled keys and options: Hydra's own checks, kept to one line
    ("unknown-key", "train", ["trainer.epoch=3"], ["trainer.epoch", "not a key", "+trainer.epoch="]),
    ("unknown-group", "train", ["modle=cnn"], ["modle", "not a key"]),
    ("unknown-option", "train", ["model=cnnn"], ["model=cnnn", "use one of", "linear", "mlp"]),
    ("unknown-optimizer", "train", ["optimizer=adamm"], ["optimizer=adamm", "sgd", "adam"]),
    ("unparsable", "train", ["optimizer.lr=["], ["["]),
    # wrong types and out-of-range values: a few through the real command; tests/test_config_checks.py checks
    # each declared value's message in process (the same check, before any data loads)
    ("lr-text", "train", ["optimizer.lr=fast"], ["optimizer.lr='fast'", "number"]),
    ("epochs-fraction", "train", ["trainer.epochs=1.5"], ["trainer.epochs=1.5", "whole number"]),
    ("precision-text", "train", ["trainer.precision=half"], ["trainer.precision='half'", "32, bf16, fp16"]),
    ("channels-last", "train", ["trainer.channels_last=yes"], ["trainer.channels_last='yes'", "true or false"]),
    (
        "nesterov",
        "train",
        ["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0"],
        ["nesterov", "momentum"],
    ),
    (
        "batchnorm-batch-1",
        "train",
        ["model=cnn", "model.batchnorm=true", "trainer.batch_size=1"],
        ["batch_size", "BatchNorm"],
    ),
    ("knn-k-too-big", "train", ["model=knn", "model.k=100000", *TINY], ["model.k=100000", "training images"]),
    # what no declaration describes: the component's own check, at construction or at first use, names the override
    (
        "cnn-images-too-small",
        "train",
        ["model=cnn", "dataset.shape=[1,4,4]", "dataset.train_size=300"],
        ["model=cnn rejected dataset.shape=[1,4,4]"],
    ),
    (
        "optimizer-own-check",
        "train",
        ["optimizer=adagrad", "+optimizer.initial_accumulator_value=-1", "dataset.train_size=300"],
        ["optimizer=adagrad rejected +optimizer.initial_accumulator_value=-1", "Invalid initial_accumulator_value"],
    ),
    (
        "loss-first-use",
        "train",
        ["+loss.ignore_index=abc", "dataset.train_size=300"],
        ["loss=cross_entropy rejected +loss.ignore_index=abc", "must be int"],
    ),
    (
        "unknown-argument",
        "train",
        ["model=linear", "+model.hiden=5"],
        ["model.hiden is not an argument of visionlab.models.linear.Linear, which takes", "bias", "conf/model/"],
    ),
    (
        "misspelled-argument",
        "train",
        ["model=mlp", "+model.dropuot=0.5"],
        ["model.dropuot is not an argument", "did you mean model.dropout?"],
    ),
    # files: data, checkpoints, output folders
    (
        "data-missing",
        "train",
        ["dataset=mnist", "dataset.root={empty}", "dataset.download=false"],
        ["MNIST not found", "dataset.root", "{empty}/MNIST/raw", "train-images-idx3-ubyte"],
    ),
    (
        "data-corrupt",
        "train",
        ["dataset=mnist", "dataset.root={corrupt_mnist}", "dataset.download=false"],
        ["MNIST", "could not be read"],
    ),
    (
        "cifar-missing",
        "train",
        ["dataset=cifar10", "dataset.root={empty}", "dataset.download=false"],
        ["CIFAR-10 not found", "data_batch_1"],
    ),
    (
        "cifar-corrupt",
        "train",
        ["dataset=cifar10", "dataset.root={corrupt_cifar}", "dataset.download=false"],
        ["data_batch_1 is corrupt"],
    ),
    ("run-dir-unwritable", "train", ["hydra.run.dir=/proc/visionlab"], ["cannot write", "hydra.run.dir"]),
    ("resume-missing", "train", ["resume=/nowhere/last.pt"], ["resume=/nowhere/last.pt", "does not exist"]),
    ("resume-no-checkpoint", "train", ["resume={no_checkpoint}"], ["no last.pt", "start it again"]),
    ("resume-completed", "train", ["resume={completed}"], ["already completed"]),
    ("resume-truncated", "train", ["resume={truncated}"], ["corrupt", "truncated.pt"]),
    ("resume-code", "train", ["resume={code}"], ["corrupt or not a visionlab checkpoint"]),
    (
        "resume-plus-overrides",
        "train",
        ["resume={completed}", "optimizer.lr=0.1"],
        ["drop the other arguments", "optimizer.lr=0.1"],
    ),
    ("resume-path-in-multirun", "train", ["-m", "resume={completed}"], ["resume=auto"]),
    (
        "multirun-cfg-hydra",
        "train",
        ["-m", "--cfg", "hydra", "model=linear,mlp"],
        ["Only one of --run, --multirun", "drop -m"],
    ),
    (
        "multirun-info",
        "train",
        ["-m", "--info", "config", "model=linear,mlp"],
        ["Only one of --run, --multirun", "drop -m"],
    ),
    (
        "eval-checkpoint-choice",
        "eval",
        ["{completed}", "--checkpoint", "newest"],
        ["--checkpoint 'newest'", "last or best"],
    ),
    ("eval-missing", "eval", ["/nowhere/last.pt"], ["/nowhere/last.pt", "does not exist"]),
    ("eval-split", "eval", ["{mismatched}", "split=holdout"], ["split='holdout'", "test, val or train"]),
    ("eval-foreign", "eval", ["{foreign}"], ["not a visionlab checkpoint"]),
    ("eval-code", "eval", ["{code}"], ["corrupt or not a visionlab checkpoint"]),
    ("eval-mismatched", "eval", ["{mismatched}"], ["does not fit the model"]),
    ("eval-bad-override", "eval", ["{mismatched}", "trainer.device=tpu"], ["trainer.device='tpu'"]),
]
if NO_CUDA:
    CASES.append(("cuda-absent", "train", ["trainer.device=cuda"], ["trainer.device=cuda", "no CUDA GPU"]))
if os.geteuid() != 0:  # root writes anywhere
    CASES.append(
        ("run-dir-read-only", "train", ["hydra.run.dir={read_only}/run"], ["cannot write", "Permission denied"])
    )


def test_there_are_at_least_60_cases():
    """Through vl-train here, and each declared value's message in process in tests/test_config_checks.py."""
    assert len(CASES) >= 30 and len(CASES) + len(MISTYPED) >= 95


@pytest.mark.parametrize("command,args,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_exits_2_with_one_line(tmp_path, files, command, args, expected):
    args = [a.format(**files) for a in args]
    expected = [e.format(**files) for e in expected]
    if command == "train" and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    result = (
        vl_train(args, tmp_path, timeout=120)
        if command == "train"
        else run_tool("vl-eval", args, tmp_path, timeout=120)
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for words in expected:
        assert words in line, f"{words!r} not in {line!r}"


def test_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """/dev/full fails every write with ENOSPC, as a full disk does: here the next checkpoint of a resumed run."""
    run_dir = tmp_path / "run"
    args = [*TINY, "model=linear", "trainer.epochs=6", "trainer.batch_size=16", f"hydra.run.dir={run_dir}"]
    stopped = subprocess.Popen(
        [str(VL_TRAIN), *args], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for_position(run_dir, stopped, lambda at: True)
    stopped.send_signal(signal.SIGTERM)
    assert stopped.wait(timeout=60) == 128 + signal.SIGTERM
    before = (run_dir / "last.pt").read_bytes()
    (run_dir / ".last.pt.tmp").symlink_to("/dev/full")

    result = run_cli([f"resume={run_dir}"], tmp_path / "elsewhere")
    assert result.returncode == 75  # docs/architecture.md, "Exit codes": free space, then resume=
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert f"no space left on the disk of {run_dir} for last.pt (about" in line and "(last.pt) is intact" in line
    assert (run_dir / "last.pt").read_bytes() == before
    assert not (run_dir / ".last.pt.tmp").exists()


def test_an_unexpected_error_exits_1_with_the_traceback_in_the_log(tmp_path):
    """A bug, not bad input: one line on the terminal, the whole traceback in train.log."""
    run_dir = tmp_path / "run"
    program = (
        "import sys, visionlab.experiment as experiment\n"
        "def broken(cfg, run_dir): raise ZeroDivisionError('a bug in the code')\n"
        "experiment.run = broken\n"
        "from visionlab.cli import train\n"
        f"sys.argv = ['vl-train', 'hydra.run.dir={run_dir}']\n"
        "train()\n"
    )
    result = subprocess.run(
        [str(VL_TRAIN.with_name("python")), "-c", program], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "unexpected ZeroDivisionError: a bug in the code" in line and str(run_dir / "train.log") in line
    log_text = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log_text and "def broken" not in result.stderr
