"""torch.distributed helpers: keep masks and weights identical on every rank.

All functions are no-ops unless torch.distributed is initialised with world size > 1. They use
the default process group (NCCL on GPU, gloo on CPU).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of processes (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor in place with rank ``src``'s copy (bool tensors included)."""
    if not is_distributed():
        return
    for t in tensors:
        if t.dtype == torch.bool:
            carrier = t.to(torch.uint8)
            dist.broadcast(carrier, src)
            t.copy_(carrier.to(torch.bool))
        else:
            dist.broadcast(t.data, src)


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace every float tensor in place by its average over all ranks."""
    if not is_distributed():
        return
    n = world_size()
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(n)


def broadcast_int(value: int, src: int = 0) -> int:
    """Rank ``src``'s ``value`` on every rank (e.g. a seed); ``value`` itself when not distributed.

    Args:
        value: an int in [-2**63, 2**64) (a seed); values >= 2**63 travel as their int64
            two's complement, which seeds a ``torch.Generator`` the same way.
    """
    if not is_distributed():
        return value
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    signed = value - 2**64 if value >= 2**63 else value
    carrier = torch.tensor([signed], dtype=torch.int64, device=device)
    dist.broadcast(carrier, src)
    return value if rank() == src else int(carrier.item())
