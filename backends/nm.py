"""N:M masks: every group of M consecutive inputs of a neuron holds exactly N kept weights.

For a Linear weight [out, in] the groups run along ``in``; for a Conv2d weight
[out, in/groups, kh, kw] along the flattened fan-in ``(c, dy, dx)`` (row-major, as
``weight.reshape(out, -1)`` lays it out), so a group crosses a channel boundary unless M
divides kh * kw. N:M masks are constant fan-in (k = N * fan_in / M), so every condensed
backend takes them; the ``fused`` CPU kernel detects the pattern when it packs a layer and adds
its ``nm`` variant family (4-bit in-group offsets), and ``semi_structured`` runs 2:4 on CUDA.

An ablated neuron (no kept weight at all, as SRigL makes them) is allowed by :func:`is_nm`
and :func:`detect_nm` unless ``allow_ablated=False``.
"""

from __future__ import annotations

import math

import torch

#: the group sizes :func:`detect_nm` tries, smallest first
GROUP_SIZES = (2, 4, 8, 16)


def _check_nm(n: int, m: int, fan_in: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int) and 1 <= n < m):
        raise ValueError(f"N:M must be ints with 1 <= N < M, got {n}:{m}")
    if fan_in % m:
        raise ValueError(f"fan-in {fan_in} is not a multiple of M = {m} (N:M {n}:{m})")


def nm_mask(
    shape: tuple[int, ...] | torch.Size,
    n: int,
    m: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """A random N:M mask for a weight of ``shape``.

    Args:
        shape: [out, in] (Linear) or [out, in/groups, kh, kw] (Conv2d); the fan-in (the
            product of the dims after the first) must be a multiple of ``m``.
        n, m: kept weights per group and group size, 1 <= n < m.
        generator: torch.Generator for reproducible masks (CPU).

    Returns:
        bool tensor of ``shape`` on CPU: in each group of ``m`` consecutive positions of every
        row's flattened fan-in exactly ``n`` are True, chosen uniformly at random.

    Raises:
        ValueError: n, m out of range, or the fan-in not a multiple of m.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"shape must be [out, in] or [out, in/groups, kh, kw], got {list(shape)}")
    fan_in = math.prod(shape[1:])
    _check_nm(n, m, fan_in)
    scores = torch.rand(shape[0], fan_in // m, m, generator=generator)
    keep = scores.argsort(dim=-1)[..., :n]
    mask = torch.zeros(shape[0], fan_in // m, m, dtype=torch.bool)
    mask.scatter_(-1, keep, True)
    return mask.reshape(shape)


def _group_counts(mask: torch.Tensor, m: int) -> torch.Tensor:
    """int64 [out, fan_in / m]: kept weights per group of ``m`` (fan-in a multiple of m)."""
    rows = mask.reshape(mask.shape[0], -1).bool()
    return rows.reshape(rows.shape[0], -1, m).sum(dim=-1)


def is_nm(mask: torch.Tensor, n: int, m: int, allow_ablated: bool = True) -> bool:
    """Whether ``mask`` (bool or 0/1, [out, *fan_in dims]) holds exactly ``n`` kept weights in
    every group of ``m`` consecutive positions of each row's flattened fan-in; rows with none
    at all (ablated neurons) pass when ``allow_ablated``. False where the fan-in is not a
    multiple of ``m``.

    Raises:
        ValueError: n, m not ints with 1 <= n < m.
    """
    _check_nm(n, m, m)
    if mask.dim() < 2 or math.prod(mask.shape[1:]) % m:
        return False
    counts = _group_counts(mask, m)
    ok = (counts == n).all(dim=1)
    if allow_ablated:
        ok |= (counts == 0).all(dim=1)
    return bool(ok.all())


def detect_nm(mask: torch.Tensor, allow_ablated: bool = True) -> tuple[int, int] | None:
    """The N:M pattern of ``mask`` ([out, *fan_in dims]) with the smallest M of
    :data:`GROUP_SIZES` (a 2:4 mask is also 4:8; (2, 4) is returned), or None when it has none
    (also for a mask without any kept weight). Ablated rows as in :func:`is_nm`."""
    if mask.dim() < 2 or mask.shape[0] == 0:
        return None
    fan_in = math.prod(mask.shape[1:])
    for m in GROUP_SIZES:
        if fan_in % m:
            continue
        counts = _group_counts(mask, m)
        active = counts.sum(dim=1) > 0
        if not bool(active.any()) or (not allow_ablated and not bool(active.all())):
            return None
        n = int(counts[active][0, 0])
        if 1 <= n < m and is_nm(mask, n, m, allow_ablated):
            return n, m
    return None
