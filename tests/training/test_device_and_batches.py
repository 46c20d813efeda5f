"""Device choice and how an epoch is cut into batches."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from tests.conftest import CONF_DIR
from visionlab.errors import UserError
from visionlab.training.device import resolve_device
from visionlab.training.loop import steps_per_epoch, usable_size


def test_auto_picks_the_best_available_device():
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "tpu"])
def test_unknown_device_names_are_rejected(name):
    with pytest.raises(UserError, match="use auto, cpu, cuda, cuda:N or mps"):
        resolve_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_an_error_not_a_fallback():
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    "n,batch_size,usable,steps",
    [(100, 10, 100, 10), (101, 10, 100, 10), (102, 10, 102, 11), (5, 1, 5, 5), (100, 100, 100, 1), (100, 500, 100, 1)],
)
def test_an_epoch_drops_only_a_trailing_batch_of_one(n, batch_size, usable, steps):
    assert usable_size(n, batch_size) == usable
    assert steps_per_epoch(n, batch_size) == steps


@pytest.mark.parametrize(
    "n,batch_size,usable,steps",
    [(100, 10, 100, 10), (109, 10, 100, 10), (101, 10, 100, 10), (7, 10, 7, 1), (5, 1, 5, 5)],
)
def test_drop_last_drops_every_partial_batch_but_never_the_only_one(n, batch_size, usable, steps):
    assert usable_size(n, batch_size, drop_last=True) == usable
    assert steps_per_epoch(n, batch_size, drop_last=True) == steps


@pytest.mark.parametrize(
    "n,batch_size,drop_last,usable",
    [(102, 10, False, 100), (103, 10, False, 100), (104, 10, False, 104), (109, 10, True, 100), (7, 10, True, 7)],
)
def test_on_four_processes_a_trailing_batch_too_small_to_share_is_dropped(n, batch_size, drop_last, usable):
    assert usable_size(n, batch_size, drop_last=drop_last, ranks=4) == usable


@pytest.fixture
def hydra_job():
    """Makes this process a Hydra job (`HydraConfig`), as a launcher's job process is; unset after."""

    def become(mode: RunMode, num: int | None = None) -> None:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="train", return_hydra_config=True)
        cfg.hydra.mode = mode
        if num is not None:
            cfg.hydra.job.num = num
        HydraConfig.instance().set_config(cfg)

    yield become
    HydraConfig.instance().cfg = None


@pytest.fixture
def four_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_each_job_of_a_multirun_takes_its_own_gpu(four_gpus, hydra_job, name):
    """joblib's parallel jobs on one machine with 4 GPUs: job N on cuda:N mod 4, not all on cuda:0."""
    picked = []
    for num in range(6):
        hydra_job(RunMode.MULTIRUN, num)
        picked.append(resolve_device(name))
    assert picked == [torch.device("cuda", n) for n in (0, 1, 2, 3, 0, 1)]


def test_a_gpu_named_by_number_and_a_single_run_keep_their_device(four_gpus, hydra_job):
    hydra_job(RunMode.MULTIRUN, 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    hydra_job(RunMode.RUN)
    assert resolve_device("auto") == torch.device("cuda")


def test_one_gpu_is_every_job_s_gpu(monkeypatch, hydra_job):
    """Under SLURM a job sees only its allocated GPU (CUDA_VISIBLE_DEVICES): `cuda` is that one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    hydra_job(RunMode.MULTIRUN, 3)
    assert resolve_device("auto") == torch.device("cuda")
