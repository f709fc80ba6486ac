"""The C++ kernels' self-check loop: from the best ISA level this CPU has down, run one
level's variants against a reference; a level with disagreeing variants is recorded, capped
off one level lower, and warned about."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence


def check_isa_levels(
    detected: int,
    disagreeing: Callable[[int], list[str]],
    cap_isa: Callable[[int], object],
    failures: list[str],
    isas: Sequence[str],
    kernel: str,
    reference: str,
    log: logging.Logger,
) -> None:
    """For ``level`` from ``detected`` down to 1: ``disagreeing(level)`` names the variants
    at that level that disagree with the ``reference``; none: done; else they go into
    ``failures``, ``cap_isa(level - 1)`` caps the extension and ``log`` warns, naming the
    ``kernel`` (a kernel bug on a CPU the tests never ran on then costs speed, not results)."""
    for level in range(detected, 0, -1):
        bad = disagreeing(level)
        if not bad:
            return
        failures.extend(bad)
        cap_isa(level - 1)
        log.warning(
            "%s C++ kernel: %s variants disagree with %s (%s); running %s",
            kernel,
            isas[level],
            reference,
            ", ".join(bad[:4]),
            isas[level - 1],
        )
