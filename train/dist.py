"""Distributed set-up in one place: the process group, the device, and who is rank 0.

torchrun sets RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT; a
plain ``python -m train`` has none of them and runs as world size 1 without a process group.
The backend follows the device: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    local_rank: int
    world_size: int
    local_world_size: int
    device: torch.device
    is_main: bool

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def backend(self) -> str:
        return backend_for(self.device)


def single_process(device: str | torch.device = "cpu") -> DistEnv:
    """A world-size-1 DistEnv without a process group (tests, benchmarks, in-process runs)."""
    device = torch.device(device)
    return DistEnv(rank=0, local_rank=0, world_size=1, local_world_size=1, device=device, is_main=True)


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; asking for CUDA without it is an error.

    The one place a device name is resolved (training, evaluation, profiling).
    """
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return device


def backend_for(device: torch.device | str) -> str:
    """The collective back-end for a device: NCCL on CUDA, gloo elsewhere."""
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def read_launch_env(environ: Mapping[str, str]) -> tuple[int, int, int, int]:
    """(rank, local_rank, world_size, local_world_size) from torchrun's variables (1 process if unset)."""
    world_size = int(environ.get("WORLD_SIZE", "1"))
    rank = int(environ.get("RANK", "0"))
    local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    local_world_size = int(environ.get("LOCAL_WORLD_SIZE", str(world_size)))
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK {rank} outside WORLD_SIZE {world_size}")
    return rank, local_rank, world_size, local_world_size


def init_distributed(
    device: str = "auto",
    environ: Mapping[str, str] | None = None,
    timeout_minutes: float = 30.0,
) -> DistEnv:
    """Pick the device, check it can hold this many processes, and join the process group.

    On CUDA, more local processes than visible GPUs is an error raised before NCCL starts
    (NCCL would otherwise hang or share a GPU between ranks).
    """
    environ = os.environ if environ is None else environ
    rank, local_rank, world_size, local_world_size = read_launch_env(environ)
    if resolve_device(device).startswith("cuda"):
        visible = torch.cuda.device_count()
        if local_world_size > visible:
            raise RuntimeError(
                f"{local_world_size} processes on this node but only {visible} visible GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
                "lower --nproc-per-node / --world-size or pass --device cpu"
            )
        torch.cuda.set_device(local_rank)
        torch_device = torch.device("cuda", local_rank)
    else:
        torch_device = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        kwargs = {}
        if torch_device.type == "cuda":
            kwargs["device_id"] = torch_device  # eager NCCL init: a bad rank fails now, not mid-step
        dist.init_process_group(
            backend=backend_for(torch_device),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(minutes=timeout_minutes),
            **kwargs,
        )
    return DistEnv(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        local_world_size=local_world_size,
        device=torch_device,
        is_main=rank == 0,
    )


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        if env.device.type == "cuda":
            dist.barrier(device_ids=[env.local_rank])
        else:
            dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, env: DistEnv) -> torch.Tensor:
    """Sum ``tensor`` over ranks in place (a no-op at world size 1)."""
    if env.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_gather_objects(obj, env: DistEnv) -> list:
    """Every rank's ``obj``, in rank order."""
    if not env.distributed:
        return [obj]
    gathered = [None] * env.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def to_device(batch: dict, device: torch.device) -> dict:
    return {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
