"""One run trained by several processes (docs/architecture.md, "Several processes"): the process group, and what
the processes must agree on.

Every process (a rank) holds the whole model and the same train split, draws the same order of it, and takes its
own share of each batch: the batch is `trainer.batch_size` images in all, so the steps, the learning rate and its
schedule are those of one process training on the whole batch. DistributedDataParallel averages the gradients; a
rank's data loss is weighted by its share of the batch, so that average is the whole batch's gradient even when
the batch does not divide evenly. An evaluation is shared the same way: each rank scores its own consecutive part
of the split, with rank 0's buffers, and the sums are added over the ranks. Whatever decides the run's course (a
stop request, a nan loss, the val metrics that early stopping, the schedule and best.pt read) is agreed through a
collective, so no rank waits on another that has stopped; after each step one collective (`agreed_step`) carries
both the loss and the stop request. A rank that dies ends the others at once, and a collective gives up on one that
hangs after `TIMEOUT`.

One process (no process group) is the case every function here reduces to: nothing is exchanged.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# How long a collective waits for a rank that is alive but not there yet. A rank that dies is noticed at once (its
# socket closes, and the launcher ends the others); this bounds a rank that hangs, and must outlast anything one
# rank does alone between two collectives: rank 0 writing a checkpoint to a slow shared disk, say.
TIMEOUT = timedelta(minutes=5)
LAUNCHED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # torchrun's, and elastic_launch's


def launched() -> bool:
    """This process is one rank of several, started by torchrun or by vl-train's launcher (the variables they set)."""
    return all(name in os.environ for name in LAUNCHED) and int(os.environ["WORLD_SIZE"]) > 1


def processes(devices: int | str) -> int:
    """`trainer.devices`: a count, or `auto`, every CUDA GPU (1 where there is none)."""
    if devices == "auto":
        return max(1, torch.cuda.device_count())
    return int(devices)


def join() -> None:
    """This process into the run's group: NCCL where it trains on its own GPU (`LOCAL_RANK`), gloo on the CPU."""
    if dist.is_initialized():
        return
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)


def leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def device(device: torch.device) -> torch.device:
    """A rank's own GPU (cuda:LOCAL_RANK) when the run is on CUDA; the CPU is every rank's."""
    if dist.is_initialized() and device.type == "cuda":
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def part(n: int) -> tuple[int, int]:
    """This rank's consecutive part `[start, stop)` of n things (a batch, a split being evaluated), as
    `Tensor.tensor_split` cuts them: W parts in rank order, the first n % W one longer than the others."""
    ranks, me = world_size(), rank()
    size, longer = divmod(n, ranks)
    start = me * size + min(me, longer)
    return start, start + size + (me < longer)


def shard(index: torch.Tensor) -> tuple[torch.Tensor, float]:
    """This rank's part of a batch's indices, and the weight of its data loss: W * its share of the batch, so that
    DistributedDataParallel's average of the W gradients is the gradient of the whole batch's mean loss."""
    ranks = world_size()
    if ranks == 1:
        return index, 1.0
    start, stop = part(len(index))
    return index[start:stop], ranks * (stop - start) / len(index)


def total(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over the ranks (a new tensor; `value` itself keeps this rank's part)."""
    if world_size() == 1:
        return value
    summed = value.clone()
    dist.all_reduce(summed)
    return summed


def agreed(signum: int | None) -> int | None:
    """A stop request as every rank sees it: the signal any rank received (the largest number), or None."""
    if world_size() == 1:
        return signum
    flag = torch.tensor(signum or 0, device=_collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def agreed_step(loss: torch.Tensor, signum: int | None) -> tuple[torch.Tensor, int | None]:
    """After a step, in one collective: the whole batch's loss (the mean of the ranks' `loss`) and the stop request
    as every rank sees it (`agreed`'s). One process: both as they are, nothing exchanged.

    An all-gather of [loss, signal] from each rank, since one all-reduce cannot both add and take the largest."""
    ranks = world_size()
    if ranks == 1:
        return loss, signum
    mine = torch.stack([loss, loss.new_tensor(signum or 0)])  # a signal number is exact in any float type
    every = [torch.empty_like(mine) for _ in range(ranks)]
    dist.all_gather(every, mine)
    every = torch.stack(every)
    return every[:, 0].sum() / ranks, int(every[:, 1].max().item()) or None


def from_main(value: Any) -> Any:
    """Rank 0's `value` on every rank (any picklable object)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=_collective_device())
    return box[0]


def each_rank(value: Any) -> list[Any]:
    """Every rank's `value`, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def same_buffers(model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm's running statistics) in `model` on every rank, so that each evaluates the model
    rank 0 saves. Each rank's BatchNorm updates them from its own share of the batch; DistributedDataParallel
    overwrites them with rank 0's before every training step anyway, so training is unchanged. One broadcast per
    dtype; nothing on one process, or for a model without buffers."""
    if world_size() == 1:
        return
    groups: dict[tuple[torch.dtype, torch.device], list[torch.Tensor]] = {}
    for buffer in model.buffers():
        groups.setdefault((buffer.dtype, buffer.device), []).append(buffer)
    for (dtype, _), buffers in groups.items():
        flat = torch.cat([buffer.detach().reshape(-1) for buffer in buffers])
        flat = flat.to(torch.uint8) if dtype == torch.bool else flat  # gloo has no bool
        dist.broadcast(flat, src=0)
        if not is_main():
            for buffer, value in zip(buffers, flat.split([b.numel() for b in buffers]), strict=True):
                buffer.copy_(value.view_as(buffer))


def _collective_device() -> torch.device:
    """Where a collective's tensors live: NCCL's on the rank's GPU, gloo's on the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def replicated(model: nn.Module, sync_batchnorm: bool) -> nn.Module | None:
    """The model wrapped for training on every rank (gradients averaged), or None in a run of one process.

    Wrapped after its first use and after everything fitted from data (whitening, normalization), which each rank
    fitted identically from the same images. `model` itself (its state_dict, evaluation) stays unwrapped.
    """
    if world_size() == 1:
        return None
    if sync_batchnorm:  # on CUDA only: config.validate refuses it on the CPU, where torch's SyncBatchNorm cannot run
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    parameter_device = next(model.parameters()).device
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[parameter_device] if parameter_device.type == "cuda" else None
    )
