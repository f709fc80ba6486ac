"""Process-group set-up for torchrun and SLURM (submitit), and device selection.

One process (the default) needs nothing. Under ``torchrun`` (``WORLD_SIZE`` > 1 in the
environment) or a SLURM job with several tasks started by submitit (no torchrun:
``submitit.helpers.TorchDistributedEnvironment().export()`` writes the env:// variables), the
process group is initialised with NCCL on GPU and gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from suite.runtime import parse_device


@dataclass
class DistContext:
    """Where this process runs: rank, world size, local rank and device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, logs and result records."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Whether a process group with more than one process is in use."""
        return self.world_size > 1

    def barrier(self) -> None:
        """Wait for every rank (no-op in one process)."""
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Destroy the process group if this context created it."""
        if self.initialised_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialised_here = False


def _under_submitit_multitask() -> bool:
    """A task started by submitit (SLURM, or its local executor) in a job of more than one task,
    with no torchrun variables. submitit's ``JobEnvironment`` reads the task count of either."""
    if "RANK" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return False
    from submitit import JobEnvironment

    return JobEnvironment().num_tasks > 1


def setup(device: str = "auto") -> DistContext:
    """Initialise torch.distributed when launched with several processes; pick the device.

    Returns:
        The :class:`DistContext` of this process (world size 1 when not distributed).
    """
    if _under_submitit_multitask():
        from submitit.helpers import TorchDistributedEnvironment

        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return DistContext(device=parse_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = parse_device(device, local_rank)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend)
        created = True
    return DistContext(rank, world, local_rank, dev, created)


def all_reduce_sum(values: list[float], ctx: DistContext) -> list[float]:
    """Sum a list of numbers over all ranks (identity in one process)."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()
