"""The process's compute settings, one copy for every runner: threads and devices.

- :func:`set_threads` sets numba's and torch's thread counts together (``torch.utils.benchmark``
  times with ONE thread unless told otherwise, and numba keeps a setting of its own).
- :func:`parse_device` turns a device string (``auto``, ``cpu``, ``cuda``, ``cuda:N``) into a
  ``torch.device`` that exists here, or raises :class:`DeviceError` naming what is allowed.
- :func:`thread_policy` says how the OpenMP threads of this process wait (recorded by benchmarks).

Imports only torch (numba lazily), so scripts that run without the harness installed
(``scripts/gpu_check.py``) can use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

__all__ = ["DeviceError", "parse_device", "set_threads", "thread_policy"]


class DeviceError(ValueError):
    """A device string that is not valid here; the message names the allowed ones."""


def set_threads(threads: int | None, grad: bool | None = None) -> dict[str, int | None]:
    """Use ``threads`` intra-op threads in torch and in numba (when it imports).

    numba first: starting its thread pool can reset the OpenMP thread count that torch reports
    (seen in asv's forked benchmark processes), so torch is set last and checked.

    Args:
        threads: thread count >= 1; ``None`` means ``os.cpu_count()``.
        grad: if not None, switch autograd on or off for this process as well.

    Returns:
        ``{"threads": n, "numba_threads": m or None}`` as actually set (numba is capped at its
        ``NUMBA_NUM_THREADS`` launch limit).

    Raises:
        ValueError: ``threads`` is not a positive integer.
        RuntimeError: torch does not report ``threads`` afterwards.
    """
    if threads is None:
        n = os.cpu_count() or 1
    elif isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(
            f"threads must be an integer >= 1 (or null for all cores), got {threads!r}"
        )
    else:
        n = threads
    numba_threads = None
    try:
        import numba
    except ImportError:
        pass
    else:
        numba_threads = min(n, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(numba_threads)
    torch.set_num_threads(n)
    if torch.get_num_threads() != n:
        raise RuntimeError(f"asked torch for {n} threads, it uses {torch.get_num_threads()}")
    if grad is not None:
        torch.set_grad_enabled(bool(grad))
    return {"threads": n, "numba_threads": numba_threads}


def thread_policy() -> dict[str, object]:
    """How this process runs its threads: torch's thread count, ``OMP_WAIT_POLICY`` (unset means
    the OpenMP runtime's default), ``SRIGL_PARALLEL`` (where the C++ kernels run their parallel
    jobs: auto, pool or team) and the 1-minute load average of the machine (None where the
    OS has none): a timing taken with a load above the core count is a loaded machine's."""
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        # how the C++ kernels run in parallel: "auto" (default: torch's OpenMP team, the pool
        # while team jobs come late), "pool" or "team"
        "srigl_parallel": os.environ.get("SRIGL_PARALLEL") or "auto",
        "load_avg_1m": load,
        "cpu_count": os.cpu_count(),
    }


def parse_device(
    device: str | torch.device, local_rank: int = 0, allowed: Sequence[str] = ("cpu", "cuda")
) -> torch.device:
    """The ``torch.device`` named by ``device``, checked to exist on this machine.

    Args:
        device: ``auto`` (``cuda:<local_rank>`` when CUDA is available, else ``cpu``), ``cpu``,
            ``cuda`` (= ``cuda:<local_rank>``) or ``cuda:N``.
        local_rank: this process's GPU under torch.distributed.
        allowed: device types accepted.

    Raises:
        DeviceError: an invalid string, a type outside ``allowed``, or CUDA where there is none.
    """
    allowed_text = ", ".join(["auto", *allowed] + (["cuda:N"] if "cuda" in allowed else []))
    if isinstance(device, str) and device == "auto":
        use_cuda = "cuda" in allowed and torch.cuda.is_available()
        return torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceError(f"device {device!r} is not valid; allowed: {allowed_text}") from exc
    if dev.type not in allowed:
        raise DeviceError(f"device {device!r} is not supported; allowed: {allowed_text}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {device!r} requested but CUDA is not available; use auto or cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    return dev
