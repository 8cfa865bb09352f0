"""Several processes on one or many machines, started by ``torchrun`` (PyTorch's own launcher).

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in
every process it starts; :func:`init_distributed` reads them and joins the process group
(``torch.distributed``; gloo on the CPU, NCCL on CUDA). Without them (a plain ``lmp`` call)
everything here is a no-op for one process of rank 0, so a single process runs exactly as before.
See docs/distributed.md for the commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands among the processes of one run.

    Attributes:
        rank: 0..world_size-1 over all machines; rank 0 logs and writes checkpoints.
        world_size: number of processes.
        local_rank: index of this process on its machine (its CUDA device).
        owns_group: this process group was created by :func:`init_distributed` (and is
            destroyed by :func:`close_distributed`).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def torchrun_env() -> tuple[int, int, int] | None:
    """``(rank, world_size, local_rank)`` from torchrun's environment variables, or None outside torchrun.

    Raises:
        ValueError: the variables are not integers or the rank is outside ``0..world_size-1``.
    """
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError as e:
        raise ValueError(f"bad torchrun environment (RANK, WORLD_SIZE, LOCAL_RANK): {e}") from e
    if not 0 <= rank < world:
        raise ValueError(f"bad torchrun environment: RANK={rank} is outside 0..{world - 1}")
    return rank, world, local


def process_device(device: str = "auto") -> str:
    """``device`` resolved for this process: under torchrun, CUDA means ``cuda:LOCAL_RANK``.

    Raises:
        ValueError: an unknown device, or CUDA requested without it.
    """
    dev = resolve_device(device)
    env = torchrun_env()
    if env is not None and dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", env[2])
    return str(dev)


def init_distributed(device: str = "auto", backend: str | None = None) -> tuple[DistContext, torch.device]:
    """Join torchrun's process group when started by torchrun with several processes.

    Args:
        device: ``auto``, ``cpu`` or ``cuda`` (see :func:`lmpcli.device.resolve_device`); under
            torchrun on CUDA each process takes the device ``cuda:LOCAL_RANK``.
        backend: process-group backend; None = ``nccl`` on CUDA, ``gloo`` on the CPU.

    Returns:
        (context, this process's device). One process (no torchrun, or ``WORLD_SIZE=1``):
        ``DistContext()`` and ``resolve_device(device)``, with no process group.

    Raises:
        ValueError: bad torchrun variables, an unknown device, or CUDA requested without it.
    """
    env = torchrun_env()
    dev = torch.device(process_device(device))
    if env is None or env[1] == 1:
        return DistContext(), dev
    rank, world, local = env
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(backend or ("nccl" if dev.type == "cuda" else "gloo"))
    return DistContext(rank, world, local, owns), dev


def close_distributed(ctx: DistContext) -> None:
    """Leave the process group that :func:`init_distributed` created (a no-op otherwise)."""
    if ctx.owns_group and dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; leave together
        dist.destroy_process_group()


def all_gather_objects(obj, ctx: DistContext) -> list:
    """Every rank's ``obj`` (any picklable value), in rank order; ``[obj]`` for one process."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: DistContext) -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if ctx.distributed:
        dist.barrier()


def reduce_epoch_row(row: dict, ctx: DistContext) -> dict:
    """Combine the per-rank epoch metrics of :func:`lmpcli.train.train_one_epoch`.

    Every rank sees the same number of images per epoch (a DistributedSampler pads the last
    ranks), so the mean loss and accuracies are the means over ranks; ``seconds`` is the
    slowest rank's and ``images_per_s`` the sum over ranks (the run's throughput).
    """
    if not ctx.distributed:
        return row
    rows = all_gather_objects(row, ctx)
    out = dict(row)
    for key in ("train_loss", "train_acc", "train_acc_replica"):
        out[key] = sum(r[key] for r in rows) / len(rows)
    out["seconds"] = max(r["seconds"] for r in rows)
    out["images_per_s"] = sum(r["images_per_s"] for r in rows)
    return out


def convert_sync_batchnorm(model: torch.nn.Module, norms: list[torch.nn.Module]) -> torch.nn.Module:
    """Replace the batch norms ``norms`` inside ``model`` by :class:`torch.nn.SyncBatchNorm`
    (statistics over the whole global batch, all ranks), keeping their weights and statistics.

    Only the given layers change (the trained blocks: :func:`lmpcli.train.trained_batchnorms`);
    frozen stages keep their plain, eval-mode batch norms. Returns ``model`` (changed in place).
    """
    targets = {id(m) for m in norms}
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if id(child) in targets:
                setattr(parent, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    return model
