"""Timing kernel variants where a quiet process runs them: on torch's OpenMP team.

Each C++ extension of this project has its own work pool and ``SRIGL_PARALLEL=auto`` state
(``backends/kernels/csrc/work_pool.h``): after late jobs it runs its jobs on the pool, or
serially, for a second. A tuner that timed its candidates in such a state timed every parallel
variant as a serial one in disguise, and a tie went to a serial variant (seen: a fused layer
tuned to ``perm16x32/ser``, 35 us against 25 us for ``/par``). :func:`on_team` pins the jobs to
the team while a tuner times, and restores each extension's mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

__all__ = ["TEAM", "on_team"]

#: the mode code of ``SRIGL_PARALLEL=team`` (0 pool, 1 team, 2 auto; -1 only asks)
TEAM = 1


@contextlib.contextmanager
def on_team(*set_modes: Callable[[int], int]) -> Iterator[None]:
    """Run the block with each extension's parallel jobs on the OpenMP team.

    Args:
        set_modes: each extension's mode setter (e.g. ``ops.load().pool_set_mode``): takes a
            mode code, returns the previous one. Restored on exit, also when the block raises
            (auto then starts afresh, on the team).
    """
    previous: list[tuple[Callable[[int], int], int]] = []
    try:
        for set_mode in set_modes:
            previous.append((set_mode, int(set_mode(TEAM))))
        yield
    finally:
        for set_mode, mode in reversed(previous):
            set_mode(mode)
