"""Background CPU load for a bench run (``python -m suite.bench load=1``): servers and training
jobs with data-loader workers share the CPU, so kernels are also measured with busy processes
beside them.

:func:`cpu_load` starts ``n`` processes that spin (``while True: pass``) for the duration of a
``with`` block and stops them afterwards, also when the block raises; the record says how many
ran (``metrics.load_processes``).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

from suite.bench.settings import BenchConfigError

__all__ = ["SPIN", "LoadError", "check_load", "cpu_load"]

SPIN = "while True: pass"


class LoadError(BenchConfigError):
    """A bad ``load`` setting (the message names the value and what is allowed)."""


def check_load(value: Any) -> int:
    """The number of busy processes ``load`` asks for.

    Raises:
        LoadError: ``value`` is not an integer in [0, 64].
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise LoadError(f"load={value!r} is invalid; allowed: an integer 0-64 (busy processes)")
    return value


@contextlib.contextmanager
def cpu_load(n: int) -> Iterator[list[subprocess.Popen]]:
    """Run ``n`` spinning Python processes while the block runs; yields them (``[]`` for 0)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", SPIN], stdin=subprocess.DEVNULL)
        for _ in range(check_load(n))
    ]
    try:
        yield procs
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()
