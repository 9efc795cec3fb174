"""torchrun support: initialise from the environment, know your rank, synchronise.

Everything works unchanged in a single process (rank 0 of 1). Under `torchrun --nproc_per_node N` the process
group is created from the environment (gloo on CPU, nccl on GPU); only rank 0 writes records, tables and outputs.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["backend_for", "init_from_env", "rank", "world_size", "dist_info", "is_main", "barrier", "local_device", "maybe_ddp"]


def backend_for(device_type: str) -> str:
    """The process-group backend for a device type: NCCL on GPUs, gloo elsewhere (the only device branch)."""
    return "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"


def init_from_env(device_type: str = "cpu") -> bool:
    """Join the process group torchrun describes in the environment. Returns True when distributed."""
    if dist.is_available() and dist.is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = backend_for(device_type)
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def local_device(device: torch.device) -> torch.device:
    """cuda → this process's GPU under torchrun (LOCAL_RANK); anything else unchanged."""
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def dist_info() -> tuple[int, int]:
    """(rank, world size), joining torchrun's process group first when the caller is not the CLI (which joins it)."""
    init_from_env("cuda" if torch.cuda.is_available() else "cpu")
    return rank(), world_size()


def maybe_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when a process group of more than one is up; otherwise the module itself."""
    if world_size() > 1:
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                                         else None)
    return module
