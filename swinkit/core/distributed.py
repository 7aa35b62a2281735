"""Process-group set-up for ``torchrun`` with the device's own collectives (NCCL, XCCL, HCCL; gloo on the CPU). One
process is also a valid "world"."""

from __future__ import annotations

import datetime
import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .device import distributed_backend


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launch_env() -> DistEnv:
    """Rank, world size and local rank as torchrun describes them in the environment (one process without it)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    return DistEnv(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def init_distributed(device: torch.device, single: bool = False) -> DistEnv:
    """Join the process group torchrun describes in the environment (RANK, WORLD_SIZE, LOCAL_RANK), if any, with the
    collectives of ``device`` (already this process's current device).

    ``single``: without torchrun, still make a process group of this one process (FSDP shards over a group, even of
    one), in memory (a ``HashStore``: no port is opened).
    """
    env = launch_env()
    if dist.is_initialized():
        return env
    backend = distributed_backend(device)
    if not env.enabled:
        if single:
            dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return env
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return env


def cleanup() -> None:
    """Leave the process group, then collect what the run left in reference cycles. FSDP's modules and their process
    groups hold each other (the groups' last work holds tensors whose hooks lead back to the modules); left to the
    collection at interpreter exit, the last group dies there, and a gloo worker thread releasing its tensors then
    aborts the process after the run has finished ("terminate called without an active exception")."""
    if dist.is_initialized():
        dist.destroy_process_group()
        while gc.collect():  # a pass can free what kept the rest alive (FSDP's modules take two)
            pass


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over processes in place (a no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Maximum over processes in place (a no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Minimum over processes in place (a no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def is_main_process() -> bool:
    """Rank 0 of the process group, or the only process."""
    return not dist.is_initialized() or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all processes along dim 0, in rank order (no gradient)."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` (any picklable value) in every process."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: object) -> list:
    """Every process's ``obj`` (any picklable value), in rank order."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
