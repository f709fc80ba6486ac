"""Autotuner of the direct conv kernel: which micro-kernel variant runs, decided by timing.

For a conv layer, an input size and a batch bucket (see :func:`bucket_of`), :func:`best_variant`
times every variant of the best ISA this CPU has (tile width x output channels per tile, see
``backends/kernels/csrc/conv_impl.h``) on the call's own input, interleaving the candidates over
a few rounds so that load on a shared machine hits them alike, and keeps the one with the
fastest call. Winners are kept per process and in a JSON file per machine
(``<user cache dir>/tuner/conv-<machine>.json``: CPU model, ISA, threads, torch version), so
later processes skip the timing. Each entry records the load average and the cores the host
gave while it was timed; one timed on a machine busier than its cores, or while the host gave
under 80% of the threads' cores, is timed again where it is quiet and gives them
(:func:`backends.kernels.tune_cache.tuned_under_load`, as the fused-linear and dense tuners do).
``SRIGL_TUNE=off`` switches tuning off (variant -1: the C++ default). A cache file that does not
parse or names another machine is ignored and rewritten.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Callable
from typing import Any

from backends.kernels.build import source_digest
from backends.kernels.ops import ISAS
from backends.kernels.ops import SOURCES as LINEAR_SOURCES
from backends.kernels.tune_cache import (
    TuneCache,
    fastest_interleaved,
    host_fields,
    host_fields_problem,
    tuned_under_load,
    tuning_enabled,
)
from backends.kernels.tune_cache import bucket_of as _bucket_of
from backends.kernels.tune_cache import machine_key as _machine_key

log = logging.getLogger(__name__)

# 4: entries {variant, load_avg_1m, cores_given}; 3: timed on the work-claiming pool (2: variants
# ranked by their fastest call)
SCHEMA = 4

#: the direct conv extension's sources (built by backends.fused_conv); their digest is in the
#: cache's machine key, so a changed kernel (or work pool) is timed again
CSRC = pathlib.Path(__file__).with_name("csrc")
SOURCES = [
    CSRC / "conv_op.cpp",
    CSRC / "work_pool.cpp",
    CSRC / "conv_generic.cpp",
    CSRC / "conv_avx2.cpp",
    CSRC / "conv_avx512.cpp",
    CSRC / "conv_impl.h",
    CSRC / "conv_kernels.h",
    CSRC / "cpu_isa.h",
    CSRC / "epilogue.h",
    CSRC / "work_pool.h",
]
#: the key's digest also covers the fused linear's sources: a 1x1 conv's candidates include the
#: fused linear over its pixels, so a changed linear kernel changes what the conv tuner picks
_KERNELS = source_digest(SOURCES + [p for p in LINEAR_SOURCES if p not in SOURCES])
ROUNDS = 3
ROUND_SECONDS = 2e-3
MIN_CALLS = 2
MAX_CALLS = 32


def check_entry(entry: Any) -> str | None:
    """None if ``entry`` (as read from the cache file) is a mapping with a variant code (an int)
    and numbers (or null) as ``load_avg_1m`` and ``cores_given``, else why not; whether the code
    is one of this CPU's is checked where it is used."""
    if not isinstance(entry, dict):
        return f"{entry!r} is not a mapping"
    code = entry.get("variant")
    if isinstance(code, bool) or not isinstance(code, int):
        return f"variant {code!r} is not a variant code (an int)"
    return host_fields_problem(entry)


_CACHE = TuneCache("conv", SCHEMA, "conv-kernel tuning", check_entry)


def enabled() -> bool:
    """False when ``SRIGL_TUNE`` is off/0/false/no (read at every plan miss: not a hot path)."""
    return tuning_enabled()


def bucket_of(batch: int) -> int:
    """0 for batch 1, else ceil(log2(batch)), capped at 10."""
    return _bucket_of(batch)


def machine_key(isa: int, threads: int) -> dict[str, Any]:
    """What a tuning result depends on besides the layer: CPU, ISA level, threads, torch and
    the conv kernels' sources."""
    return _machine_key(ISAS[isa], threads, _KERNELS)


def cache_path(isa: int, threads: int) -> pathlib.Path:
    """The JSON cache file for this machine and thread count."""
    return _CACHE.path(machine_key(isa, threads))


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
    input. -1 when tuning is off. A cached code that is not one of these is dropped with a
    warning and timed again; one timed under load is timed again where it is quiet."""
    if not enabled():
        return -1
    machine = machine_key(isa, threads)
    codes = [isa * 100 + v for v in range(nvariants)] + list(extra)
    with _CACHE.lock:
        _, entries = _CACHE.entries(machine)
        hit = entries.get(key)
        if hit is not None:
            if hit["variant"] not in codes:
                _CACHE.drop(machine, key, f"variant {hit['variant']!r} is not one of {codes}")
            elif not tuned_under_load(hit, threads):
                return int(hit["variant"])
    fns = {code: (lambda code=code: run(code)) for code in codes}
    times = fastest_interleaved(fns, ROUNDS, ROUND_SECONDS, MIN_CALLS, MAX_CALLS)
    best = min(codes, key=times.__getitem__)
    with _CACHE.lock:
        _, entries = _CACHE.entries(machine)
        entries[key] = {"variant": best, **host_fields(threads)}
        _CACHE.save(machine)
    log.debug("conv tuner: %s -> variant %d", key, best)
    return best


def forget_memory() -> None:
    """Drop the in-process copy of the cache files (tests; a changed cache directory)."""
    _CACHE.forget()
