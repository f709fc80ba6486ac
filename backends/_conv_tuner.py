"""Autotuner of the direct conv kernel: which micro-kernel variant runs, decided by timing.

For a conv layer, an input size and a batch bucket (see :func:`bucket_of`), :func:`best_variant`
times every variant of the best ISA this CPU has (tile width x output channels per tile, see
``backends/kernels/csrc/conv_impl.h``) on the call's own input, interleaving the candidates over
a few rounds so that load on a shared machine hits them alike, and keeps the one with the
fastest call. Winners are kept per process and in a JSON file per machine
(``<user cache dir>/tuner/conv-<machine>.json``: CPU model, ISA, threads, torch version), so
later processes skip the timing. ``SRIGL_TUNE=off`` switches tuning off (variant -1: the C++
default). A cache file that does not parse or names another machine is ignored and rewritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from backends.kernels.build import cpu_model

log = logging.getLogger(__name__)

SCHEMA = 2  # 2: variants ranked by their fastest call
ROUNDS = 3
ROUND_SECONDS = 2e-3
MAX_CALLS = 32
ISAS = ("generic", "avx2", "avx512")
_lock = threading.Lock()
_memory: dict[str, dict[str, int]] = {}


def enabled() -> bool:
    """False when ``SRIGL_TUNE`` is off/0/false/no."""
    return os.environ.get("SRIGL_TUNE", "on").strip().lower() not in ("off", "0", "false", "no")


def bucket_of(batch: int) -> int:
    """0 for batch 1, else ceil(log2(batch)), capped at 10."""
    return min((max(int(batch), 1) - 1).bit_length(), 10)


def machine_key(isa: int, threads: int) -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "isa": ISAS[isa],
        "threads": int(threads),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }


def cache_path(isa: int, threads: int) -> pathlib.Path:
    """The JSON cache file for this machine and thread count."""
    from backends.kernels.build import cache_dir

    digest = hashlib.sha256(
        json.dumps(machine_key(isa, threads), sort_keys=True).encode()
    ).hexdigest()[:12]
    return cache_dir() / "tuner" / f"conv-{digest}.json"


def _load(path: pathlib.Path, machine: dict[str, Any]) -> dict[str, int]:
    try:
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA and data.get("machine") == machine:
            return {str(k): int(v) for k, v in data["entries"].items()}
        log.warning("conv tuner: %s is from another machine or schema; rebuilding it", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("conv tuner: ignoring unreadable cache %s (%s)", path, err)
    return {}


def _save(path: pathlib.Path, machine: dict[str, Any], entries: dict[str, int]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".conv-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump({"schema": SCHEMA, "machine": machine, "entries": entries}, fh, indent=1)
        os.replace(tmp, path)
    except OSError as err:  # a read-only cache only costs the timing next time
        log.warning("conv tuner: cannot write %s (%s)", path, err)


def _time(fn: Callable[[], object]) -> float:
    """The fastest of a round's calls (other processes only ever add time, so on a shared
    machine the fastest call is the most repeatable statistic)."""
    fn()
    best, calls, end = float("inf"), 0, time.perf_counter() + ROUND_SECONDS
    while calls < MAX_CALLS:
        start = time.perf_counter()
        fn()
        stop = time.perf_counter()
        best = min(best, stop - start)
        calls += 1
        if stop > end and calls >= 2:
            break
    return best


def best_variant(
    key: str,
    isa: int,
    nvariants: int,
    run: Callable[[int], object],
    threads: int,
    extra: tuple[int, ...] = (),
) -> int:
    """The fastest variant code (isa * 100 + v, or one of ``extra``, e.g. the dense fallback
    -2) for cache key ``key``; ``run(code)`` calls the layer with that variant on the real
    input. -1 when tuning is off."""
    if not enabled():
        return -1
    path = cache_path(isa, threads)
    with _lock:
        entries = _memory.get(str(path))
        if entries is None:
            entries = _load(path, machine_key(isa, threads))
            _memory[str(path)] = entries
        if key in entries:
            return entries[key]
    codes = [isa * 100 + v for v in range(nvariants)] + list(extra)
    times: dict[int, list[float]] = {c: [] for c in codes}
    for r in range(ROUNDS):
        for code in codes if r % 2 == 0 else codes[::-1]:
            times[code].append(_time(lambda code=code: run(code)))
    best = min(codes, key=lambda c: min(times[c]))
    with _lock:
        entries[key] = best
        _save(path, machine_key(isa, threads), dict(entries))
    log.debug("conv tuner: %s -> variant %d", key, best)
    return best


def forget_memory() -> None:
    """Drop the in-process copies of the cache files (tests)."""
    with _lock:
        _memory.clear()
