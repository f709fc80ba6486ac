"""Instruction counts (callgrind) of the hot calls: the deterministic regression signal.

``InstructionCount.setup_cache`` runs ONE valgrind process per commit that counts every case
(:mod:`.instruction_counts`: the fused kernel at the ViT-B/16 MLP shapes, every other backend
at one shape, a digits-MLP training step of dense/rigl/srigl, one topology update of
rigl/srigl), on one thread, and ``track_instructions`` reads its count (lower is better). A
case that cannot run at a commit or on this CPU is an asv skip with the reason.

``SRIGL_ASV_COUNTS`` (a regex over case names, e.g. ``smoke`` in ``make asv-check``) limits
which cases the valgrind run counts; the others are skipped.

Wall-time ratios (``bench_backends.LayerRatio``/``FusedRatio``) stay where they are; when the
suite's paired-ratio timer with bootstrap intervals lands, they switch to it there.
"""

from __future__ import annotations

import os
import re
from typing import Any

from . import instruction_counts as ic
from ._common import backend_names

CASES_ENV = "SRIGL_ASV_COUNTS"


def selected_cases(names: list[str], pattern: str | None = None) -> list[str]:
    """``names`` that ``pattern`` (default ``$SRIGL_ASV_COUNTS``; unset: all) searches.

    Raises:
        ValueError: ``pattern`` is not a valid regular expression.
    """
    pattern = os.environ.get(CASES_ENV, "") if pattern is None else pattern
    if not pattern:
        return list(names)
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{CASES_ENV}={pattern!r} is no regular expression: {err}") from None
    return [n for n in names if regex.search(n)]


class InstructionCount:
    """Instructions of one call (callgrind, one thread), one valgrind process per commit."""

    params = (ic.case_names(backend_names()),)
    param_names = ["case"]
    version = ic.WORKLOAD_VERSION
    unit = "instructions"
    processes = 1
    repeat = 1
    number = 1
    timeout = 1500  # setup_cache: the whole valgrind run (about 5 min on the quiet 2-core VM)

    def setup_cache(self) -> dict[str, Any]:
        names = selected_cases(list(self.params[0]))
        try:
            result = ic.collect(names, timeout=self.timeout - 60)
        except ic.CountError as err:
            return {"counts": {}, "skipped": dict.fromkeys(names, str(err))}
        for name in set(self.params[0]) - set(names):
            result["skipped"][name] = f"not selected by {CASES_ENV}={os.environ[CASES_ENV]!r}"
        return result

    def setup(self, result: dict[str, Any], case: str) -> None:
        if case not in result["counts"]:
            raise NotImplementedError(result["skipped"].get(case, f"case {case!r} not counted"))

    def track_instructions(self, result: dict[str, Any], case: str) -> int:
        return result["counts"][case]

    track_instructions.unit = "instructions"
