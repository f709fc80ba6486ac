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

__all__ = ["ASK", "AUTO", "TEAM", "on_team", "restart_auto"]

#: mode codes of an extension's setter (``SRIGL_PARALLEL``: 0 pool, 1 team, 2 auto); ASK (-1)
#: changes nothing and returns the mode
ASK, TEAM, AUTO = -1, 1, 2


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


def restart_auto(set_mode: Callable[[int], int]) -> None:
    """Restart an extension's auto mode on the team (its quiet state), forgetting any fallback
    state; a no-op when another mode is set."""
    if set_mode(ASK) == AUTO:
        set_mode(AUTO)
