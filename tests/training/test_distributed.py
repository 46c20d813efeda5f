"""One run on several processes (trainer.devices=N; docs/remote.md): gloo on the CPU, real processes, tiny data.

The same run on 2 processes is the same run: one step on 2 ranks, each on its share of the batch, gives the
gradient of one process on the whole batch, and the real `vl-train trainer.devices=2` ends where one process ends.
It stops on a signal, resumes identical, and ends at once, naming it, when one of its ranks dies.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
import torch.multiprocessing as mp
from omegaconf import OmegaConf
from torch import nn

import visionlab
from tests.conftest import (
    TINY,
    VL_TRAIN,
    config_error,
    read_metrics,
    run_cli,
    run_tool,
    start_vl_train,
    wait_for_position,
    without_timing,
)
from visionlab import run_registry
from visionlab.data import DeviceSplit
from visionlab.errors import Pruned
from visionlab.reporting.embeddings import Penultimate
from visionlab.reporting.pictures.mistake_finder import MistakeFinder
from visionlab.training import distributed
from visionlab.training.loop import all_of, evaluate
from visionlab.trial_pruning import ReportToTrial, TrialPruning

# A BatchNorm-free MLP: with it, 2 processes and 1 compute the same steps up to the order of float additions.
MLP = [*TINY, "model=mlp", "model.hidden=[32]", "trainer.log_every_n_steps=5"]
TWO = ["trainer.devices=2"]
# 3 epochs of 34 steps of 16 images: a signal sent once epoch 2 is under way lands mid-epoch, with steps to spare.
LONGER = [*MLP, "trainer.epochs=3", "trainer.batch_size=16", *TWO]
FRESH = {"PYTHONUNBUFFERED": "1"}  # a process of its own (not forked from the tests' server), as users start it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(9, 12, generator=generator), torch.randint(0, 3, (9,), generator=generator)


STEPS = 3


def steps_on_rank(rank: int, port: int, out: Path) -> None:
    """One rank: the first step's gradient, then the parameters after STEPS steps, each on its share of the batch
    (9 images: 5 and 4, so the loss weights matter)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    distributed.join()
    model = tiny_mlp()
    replicas = distributed.replicated(model, sync_batchnorm=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = batch()
    gradients = None
    for _ in range(STEPS):
        index, weight = distributed.shard(torch.arange(len(labels)))
        loss = nn.functional.cross_entropy(replicas(images[index]), labels[index]) * weight
        optimizer.zero_grad()
        loss.backward()
        gradients = gradients or [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    torch.save({"gradients": gradients, "parameters": [p.detach() for p in model.parameters()]}, out / f"{rank}.pt")
    distributed.leave()


def test_one_step_on_two_ranks_is_one_step_on_the_whole_batch(tmp_path):
    mp.start_processes(steps_on_rank, args=(free_port(), tmp_path), nprocs=2, start_method="spawn")
    model = tiny_mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    images, labels = batch()
    alone = None
    for _ in range(STEPS):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        alone = alone or [p.grad.clone() for p in model.parameters()]
        optimizer.step()
    ranks = [torch.load(tmp_path / f"{rank}.pt") for rank in (0, 1)]
    for rank in ranks:
        for shared, whole in zip(rank["gradients"], alone, strict=True):
            torch.testing.assert_close(shared, whole, rtol=1e-5, atol=1e-7)
        for shared, whole in zip(rank["parameters"], model.parameters(), strict=True):
            torch.testing.assert_close(shared, whole.detach(), rtol=1e-5, atol=1e-7)
    for first, second in zip(ranks[0]["parameters"], ranks[1]["parameters"], strict=True):
        assert torch.equal(first, second), "every rank holds the same weights"


def bn_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def val_split() -> DeviceSplit:
    """23 images of 3x2x2 (12 and 11 on 2 ranks), 3 classes."""
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (23, 3, 2, 2), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 3, (23,), generator=generator)
    return DeviceSplit(images, labels, torch.full((1, 3, 1, 1), 1 / 64), torch.full((1, 3, 1, 1), -2.0))


def watched(model: nn.Module) -> tuple[MistakeFinder, Penultimate]:
    """The watches of a test pass: the mistakes, and the embedding's recorder of 7 points."""
    return MistakeFinder(4, False, torch.device("cpu")), Penultimate(model, 23, 7)


class Part:
    """A watch that can see a part: where its part starts and how many images it saw."""

    def __init__(self):
        self.first, self.images = None, 0

    def __call__(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        self.images += len(labels)

    def start_at(self, first: int) -> None:
        self.first = first

    def gather(self) -> None:
        pass


def evaluate_on_rank(rank: int, port: int, out: Path) -> None:
    """Rank 1's BatchNorm statistics made different from rank 0's (as its own share of the last batch leaves them):
    the evaluation is rank 0's model's all the same. Then one step's agreement of loss and stop request."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    distributed.join()
    model = bn_mlp()
    model[2].running_mean += rank
    seen: list[int] = []

    def count(scores: torch.Tensor, labels: torch.Tensor) -> None:
        seen.append(len(labels))

    whole = evaluate(model, val_split(), nn.functional.cross_entropy, 5, watch=count)  # rank 0's numbers, broadcast
    finder, recorder = watched(model)  # its hook records every pass from now on
    part = Part()
    shared = evaluate(model, val_split(), nn.functional.cross_entropy, 5, watch=all_of([finder, recorder, part]))
    model(val_split().batch(torch.arange(30, dtype=torch.long) % 23)[0])  # as the saliency picture does: no more rows
    agreed = distributed.agreed_step(torch.tensor(1.0 + 2 * rank), 15 if rank == 1 else None)
    torch.save(
        {
            "shared": shared,
            "whole": whole,
            "mistakes": finder.mistakes(),
            "features": torch.cat(recorder.features),
            "predicted": torch.cat(recorder.predicted),
            "seen": seen,
            "part": (part.first, part.images),
            "agreed": agreed,
        },
        out / f"{rank}.pt",
    )
    distributed.leave()


def test_an_evaluation_on_two_ranks_is_rank_0_models_on_the_whole_split_and_its_watches_see_it_all(tmp_path):
    mp.start_processes(evaluate_on_rank, args=(free_port(), tmp_path), nprocs=2, start_method="spawn")
    model = bn_mlp()
    finder, recorder = watched(model)
    alone = evaluate(model, val_split(), nn.functional.cross_entropy, 5, watch=all_of([finder, recorder]))
    model(val_split().batch(torch.arange(30, dtype=torch.long) % 23)[0])
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=False)
        for result in (got["shared"], got["whole"]):
            assert result["acc"] == alone["acc"]
            assert torch.equal(result["confusion"], alone["confusion"])
            assert result["loss"] == pytest.approx(alone["loss"], rel=1e-6)
        for mine, one in zip(got["mistakes"], finder.mistakes(), strict=True):
            torch.testing.assert_close(mine, one)
        torch.testing.assert_close(got["features"], torch.cat(recorder.features))
        assert torch.equal(got["predicted"], torch.cat(recorder.predicted))
        assert got["seen"] == [5, 5, 5, 5, 3], "a plain function watches the whole split, on every rank"
        assert got["part"] == [(0, 12), (12, 11)][rank], "each rank scored its own part"
        loss, signum = got["agreed"]
        assert loss.item() == 2.0 and signum == 15, "one collective: the mean loss and any rank's signal"


def judge_on_rank(rank: int, port: int, storage: str, number: int, out: Path) -> None:
    """One rank's ReportToTrial after epoch 1 with val/acc 0.5, below the median of the study's two done trials."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ["LOCAL_RANK"] = str(rank)
    distributed.join()
    median = OmegaConf.create({"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 2})
    judge = ReportToTrial(TrialPruning(storage, "S", number, median, run_dir="/runs/2"), "val/acc", first_step=0)
    try:
        judge.after_epoch(None, 1, {"val/acc": 0.5 + rank / 10}, {})  # rank 1's own value is never reported
        (out / str(rank)).write_text("went on")
    except Pruned:
        (out / str(rank)).write_text("pruned")
    distributed.leave()


def test_a_trial_is_pruned_on_rank_0_and_every_rank_stops(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.create_study(study_name="S", storage=storage, direction="maximize")
    for value in (0.8, 0.9):
        trial = study.ask()
        trial.report(value, step=1)
        study.tell(trial, value)
    number = study.ask().number
    mp.start_processes(judge_on_rank, args=(free_port(), storage, number, tmp_path), nprocs=2, start_method="spawn")
    assert [(tmp_path / str(rank)).read_text() for rank in (0, 1)] == ["pruned", "pruned"]
    (trial,) = [t for t in optuna.load_study(study_name="S", storage=storage).trials if t.number == number]
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.intermediate_values == {1: 0.5}


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> Path:
    """An uninterrupted run on 2 processes: the reference for the stopped one. Its TMPDIR is its own (other tests'
    runs on this machine have theirs), and holds nothing once it ends: rank 1's scratch folder is removed."""
    run_dir = tmp_path_factory.mktemp("two") / "run"
    tmpdir = tmp_path_factory.mktemp("two-tmpdir")
    result = run_cli(LONGER, run_dir, env={**FRESH, "TMPDIR": str(tmpdir)})
    assert result.returncode == 0, result.stderr
    assert left_behind(tmpdir) == [], "rank 1's scratch folder and the launcher's logs are removed"
    return run_dir


def test_two_processes_are_one_run_in_one_folder_that_ends_as_one_process_does(tmp_path, two_processes):
    one = tmp_path / "one"
    result = run_cli([arg for arg in LONGER if arg not in TWO], one, env=FRESH)
    assert result.returncode == 0, result.stderr
    assert os.listdir(two_processes.parent) == ["run"], "one run folder, not one per rank"
    two, alone = read_metrics(two_processes), read_metrics(one)
    assert two["status"] == "completed" and two["steps"] == alone["steps"] == 3 * 34
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc"):
        assert two[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-6), key
    log = (two_processes / "train.log").read_text()
    assert log.count("device: cpu (1 CPU threads each, 2 processes with a share of every batch of 16)") == 1
    assert log.count("epoch 3/3") == 1, "rank 0 alone logs"
    assert "trainer.devices=2" in (two_processes / "summary.md").read_text(), "the ranks know the job's overrides"


def test_vl_eval_scores_the_checkpoint_of_two_processes_as_the_run_did(tmp_path, two_processes):
    """The checkpoint holds the model itself, not DistributedDataParallel's wrapper around it."""
    result = run_tool("vl-eval", [two_processes], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    report = json.loads((two_processes / "eval_last_test.json").read_text())
    assert report["test/acc"] == read_metrics(two_processes)["test/acc"]


def test_auto_is_every_cuda_gpu_and_one_process_without_one():
    assert distributed.processes("auto") == max(1, torch.cuda.device_count())
    assert distributed.processes(3) == 3


def test_torchrun_gives_one_run_folder_and_the_same_run(tmp_path, two_processes):
    """torchrun starts every rank as vl-train: rank 0 composes the config and makes the folder, the others take both
    from it, so the run is the one `trainer.devices=2` makes, in one folder."""
    run_dir = tmp_path / "run"
    result = subprocess.run(
        [str(VL_TRAIN.with_name("torchrun")), "--nproc-per-node=2", str(VL_TRAIN)]
        + [arg for arg in LONGER if arg not in TWO]
        + [f"hydra.run.dir={run_dir}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, **FRESH},
    )
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path) == ["run"]
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(two_processes))


def test_torchrun_refuses_another_number_of_devices_in_one_line_and_no_rank_waits(tmp_path):
    """torchrun's processes are the run's: trainer.devices=3 on 2 is refused by rank 0 (exit 2), which hands rank 1
    nothing to run, so it ends too instead of waiting for a broadcast."""
    result = subprocess.run(
        [str(VL_TRAIN.with_name("torchrun")), "--nproc-per-node=2", str(VL_TRAIN), *MLP, "trainer.devices=3"]
        + [f"hydra.run.dir={tmp_path / 'run'}"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **FRESH},
    )
    assert "exitcode  : 2" in result.stderr  # torchrun's report of rank 0; it exits 1 itself
    assert "error: trainer.devices=3 with 2 processes launched" in result.stderr
    assert "use trainer.devices=1 or 2" in result.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_the_python_api_trains_on_two_processes_as_vl_train_does(tmp_path, two_processes):
    run = visionlab.train(*LONGER, f"hydra.run.dir={tmp_path / 'run'}")
    assert os.listdir(tmp_path) == ["run"]
    assert without_timing(run.metrics) == without_timing(read_metrics(two_processes))


def left_behind(tmpdir: Path) -> list[str]:
    """What a run left in its TMPDIR, but torch's own caches, which every later run on the machine uses."""
    return [path.name for path in tmpdir.iterdir() if not path.name.startswith("torchinductor_")]


def test_sigterm_mid_epoch_then_resume_ends_identical(tmp_path, two_processes):
    run_dir = tmp_path / "run"
    process = start_vl_train(LONGER, run_dir)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert read_metrics(run_dir)["status"] == "interrupted"
    stopped = torch.load(run_dir / "last.pt", weights_only=True)
    assert stopped["position"]["batch"] > 0, "stopped mid-epoch: each rank's epoch sums and random states are kept"
    assert len(stopped["ranks"]) == 2
    result = run_cli([f"resume={run_dir}"], run_dir, env=FRESH)
    assert result.returncode == 0, result.stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(two_processes))


def test_resume_on_another_number_of_processes_carries_on_and_says_so(tmp_path, two_processes):
    run_dir = tmp_path / "run"
    short = [*LONGER[:-1], "trainer.epochs=1"]  # all but TWO's override
    process = start_vl_train([*short, "trainer.devices=2", "trainer.checkpoint_every_steps=10"], run_dir)
    wait_for_position(run_dir, process, lambda at: at["step"] >= 10)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    result = run_cli([f"resume={run_dir}", "trainer.devices=1"], run_dir)
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir)["steps"] == 34
    lines = [line for line in (run_dir / "train.log").read_text().splitlines() if "carries on with 1" in line]
    assert len(lines) == 1, "one line says the split of the batches changed"


def sent_to_the_group_in_epoch_2(run_dir: Path, signum: int) -> tuple[int, str]:
    """What a terminal does to its job (Ctrl-C, closing): `signum` to vl-train's process group, every rank in it,
    once epoch 2 is under way; the exit code and stderr."""
    process = start_vl_train(LONGER, run_dir, own_group=True)
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    os.killpg(process.pid, signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_ctrl_c_stops_every_rank_at_one_saved_step_with_one_exit_code(tmp_path):
    run_dir = tmp_path / "run"
    code, stderr = sent_to_the_group_in_epoch_2(run_dir, signal.SIGINT)
    assert code == 130, stderr
    assert read_metrics(run_dir)["status"] == "interrupted"
    assert "second Ctrl-C" not in stderr, "vl-train passes no second SIGINT on to the ranks"
    assert torch.load(run_dir / "last.pt", weights_only=True)["position"]["step"] >= 34


def test_a_hangup_reaches_every_rank_and_the_run_carries_on(tmp_path, two_processes):
    """The terminal closing sends SIGHUP to its whole process group: vl-train and both ranks, which go on."""
    run_dir = tmp_path / "run"
    code, stderr = sent_to_the_group_in_epoch_2(run_dir, signal.SIGHUP)
    assert code == 0, stderr
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(two_processes))


def rank_pid(parent: int, rank: int, timeout: float = 60) -> int:
    """The pid of the launcher's rank `rank`: a child of `parent` whose entry in the run registry names that rank's
    own folder (training/threads.py; the ranks set their variables once started, so /proc's environ lacks them)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = set(map(int, Path(f"/proc/{parent}/task/{parent}/children").read_text().split()))
        for entry in run_registry.alive():
            if entry.pid in children and f"visionlab-rank{rank}-" in entry.run_dir:
                return entry.pid
        time.sleep(0.1)
    raise AssertionError(f"no rank {rank} under pid {parent}")


def test_a_rank_killed_ends_the_run_within_seconds_naming_it(tmp_path):
    run_dir, tmpdir = tmp_path / "run", tmp_path / "tmpdir"
    tmpdir.mkdir()
    process = start_vl_train(LONGER, run_dir, {"TMPDIR": str(tmpdir)})
    wait_for_position(run_dir, process, lambda at: at["epoch"] >= 2)
    victim = rank_pid(process.pid, 1)
    killed = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - killed < 15, "no hang"
    assert left_behind(tmpdir) == [], "the killed rank's files and the launcher's logs are removed"
    assert process.returncode == 1
    # rank 0 may see the launcher's SIGTERM before its collective fails, and say it stops: no error of its own
    errors = [line for line in stderr.strip().splitlines() if not line.startswith("received SIGTERM: stopping")]
    assert len(errors) == 1, stderr
    assert errors[0].endswith(
        f"error: rank 1 of 2 (pid {victim}) was killed by SIGKILL: the other processes were stopped; "
        f"resume={run_dir} carries on from its last.pt"
    )


def test_a_divergence_ends_every_rank_with_one_line_and_exit_code_3(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*MLP, *TWO, "optimizer=sgd", "optimizer.lr=1e12"], run_dir, env=FRESH)
    assert result.returncode == 3, result.stderr
    assert read_metrics(run_dir)["status"] == "diverged"
    (line,) = result.stderr.strip().splitlines()  # rank 0's: rank 1 ends the same way and says nothing
    assert "training diverged: the loss is nan by step" in line


def test_a_knn_runs_on_rank_0_alone(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "model=knn", *TWO], run_dir, env=FRESH)
    assert result.returncode == 0, result.stderr
    assert read_metrics(run_dir)["status"] == "completed"
    log = (run_dir / "train.log").read_text()
    assert "this model memorizes its train split (kNN), so 1 of the 2 processes runs it; the others end" in log


ACCEPTED = "use a whole number of processes of at least 1, or one of auto"


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["trainer.devices=0"], f"trainer.devices=0 is invalid: {ACCEPTED}"),
        (["trainer.devices=x"], f"trainer.devices='x' is invalid: {ACCEPTED}"),
        (
            ["trainer.devices=4", "trainer.batch_size=2"],
            "trainer.batch_size=2 with trainer.devices=4: the batch is shared by the 4 processes, so use a "
            "batch_size of at least 4",
        ),
    ],
)
def test_a_bad_number_of_devices_is_one_line(overrides, line):
    assert config_error(overrides) == line


def test_sync_batchnorm_on_the_cpu_is_refused_in_one_line(tmp_path):
    result = run_cli([*TINY, "model=mlp", "model.batchnorm=true", "trainer.sync_batchnorm=true", *TWO], tmp_path / "r")
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "error: trainer.sync_batchnorm=true needs CUDA GPUs (torch's SyncBatchNorm does not run on the CPU): use "
        "trainer.sync_batchnorm=false, each process's own BatchNorm statistics"
    )
