"""The autotuner of the fused CPU kernel: which variant runs, decided by timing on this machine.

For a layer (shape, k, active neurons), a batch bucket (1, 2, 3-4, 5-8, ..., 129-256, 257-512,
> 512 rows) and the thread count, :func:`tune_layer` times the candidate variants (serial /
parallel; gather rows, permute pack with each pack geometry and window layout (block-aligned,
sliding), tiled and chunk-blocked tiled with
4 or 8 accumulators, and, for layers packed as N:M, the ``nm`` family up to 32 rows; each ISA
level from AVX2 up that this CPU has) on a random input of that
batch, interleaving the candidates over a few rounds so that load on a shared machine hits
them alike, and keeps the one with the fastest call (other processes only ever add time, so
on a shared machine the fastest call is the most repeatable statistic; a median of a few
calls picked the wrong variant by up to 3x on a busy 2-core VM). The winner goes into the layer's
variant table (read by the C++ operator) and into a JSON cache, so later processes on the same
machine skip the timing.

Cache: ``<user cache dir>/tuner/fused-<machine>.json`` (:func:`cache_path`), one file per
machine key (CPU model, ISA level, threads, torch version); a file that does not parse, has
another schema, or names another machine is ignored with a warning and rewritten. Each entry
records the load average it was timed at; one timed on a machine busier than its cores is timed
again when the machine is quiet (load at most half the cores). An entry that is not one this
tuner writes (:func:`check_entry`) or that does not run here is dropped with a warning, timed
again and written back without it; writes merge with other processes' entries.

``SRIGL_TUNE=off`` in the environment switches tuning off: the static rule of the C++ operator
runs (best ISA; up to 8 rows the permute pack where this ISA runs it, else the gather rows
kernel; above 8 rows the tiled kernel with 4 accumulators; parallel when torch has more than
one thread).
"""

from __future__ import annotations

import logging
import pathlib
import time
from typing import Any

import torch

from backends.kernels import ops
from backends.kernels.build import source_digest
from backends.kernels.parallel_mode import on_team
from backends.kernels.tune_cache import (
    TuneCache,
    TuneCacheWarning,  # noqa: F401  (re-exported: what a bad cache warns with)
    fastest_interleaved,
    host_fields_problem,
    time_while_given,
    tuned_under_load,
    tuning_enabled,
)
from backends.kernels.tune_cache import bucket_of as _bucket_of
from backends.kernels.tune_cache import machine_key as _machine_key

log = logging.getLogger(__name__)

# 5: the permute pack's window layout timed too ("windows"); 4: window-walking permute
# kernels, sliding windows; 3: timed on the work-claiming pool; 2: fastest call; 1: median of
# round means
SCHEMA = 5
ROUNDS = 5
ROUND_SECONDS = 2e-3  # calls per candidate and round: about this long, at least MIN_CALLS
MIN_CALLS = 2
MAX_CALLS = 64
#: every (lanes, block) permute pack geometry some ISA level runs
GEOMETRIES = frozenset(g for isa in range(len(ops.ISAS)) for g in ops.perm_geometries(isa))


def check_entry(entry: Any) -> str | None:
    """None if ``entry`` (as read from the cache file) is one this tuner writes, else why not:
    a mapping with an int ``variant`` whose parts are in range, a ``geometry`` that is ``[]``
    or a known (lanes, block) pack, ``windows`` (if there) one of ``ops.WINDOWS``, and numbers
    (or null) as ``load_avg_1m`` and ``cores_given``."""
    if not isinstance(entry, dict):
        return f"a {type(entry).__name__}, not a mapping"
    code = entry.get("variant")
    if isinstance(code, bool) or not isinstance(code, int) or code < 0:
        return f"variant {code!r} is not a variant code (an int >= 0)"
    v = ops.decode(code)
    in_range = v.isa < len(ops.ISAS) and v.family < len(ops.FAMILIES)
    if not in_range or v.wide not in ops.WIDTHS or v.parallel > 1:
        return (
            f"variant {code} is out of range "
            f"(isa < {len(ops.ISAS)}, family < {len(ops.FAMILIES)}, 0/1 flags)"
        )
    geo = entry.get("geometry")
    if not isinstance(geo, list) or (geo and tuple(geo) not in GEOMETRIES):
        return f"geometry {geo!r} is not [] or one of {sorted(map(list, GEOMETRIES))}"
    windows = entry.get("windows", 0)
    if isinstance(windows, bool) or windows not in ops.WINDOWS:
        return f"windows {windows!r} is not one of {sorted(ops.WINDOWS)}"
    return host_fields_problem(entry)


_KERNELS = source_digest(ops.SOURCES)  # a changed kernel source: a new cache file
_CACHE = TuneCache("fused", SCHEMA, "fused-kernel tuning", check_entry)
_lock = _CACHE.lock


_ENABLED = [tuning_enabled()]


def enabled() -> bool:
    """False when ``SRIGL_TUNE`` is ``off``/``0``/``false``/``no`` (the static rule runs).

    The environment is read when this module is imported (the forward hot path asks on every
    call); :func:`refresh` reads it again."""
    return _ENABLED[0]


def refresh() -> None:
    """Read ``SRIGL_TUNE`` again (after changing the environment in-process)."""
    _ENABLED[0] = tuning_enabled()


def bucket_of(batch: int) -> int:
    """The batch bucket of ``batch`` rows: 0 for 1, ceil(log2(batch)) up to ops.BUCKETS - 1."""
    return _bucket_of(batch, ops.BUCKETS)


def thread_slot(threads: int) -> int:
    return min(max(threads, 1), ops.THREAD_SLOTS) - 1


def machine_key(threads: int) -> dict[str, Any]:
    """What a tuning result depends on besides the layer: CPU, ISA level, threads, torch and
    the fused kernels' sources."""
    return _machine_key(ops.ISAS[int(ops.load().fused_isa())], threads, _KERNELS)


def cache_path(threads: int) -> pathlib.Path:
    """The JSON cache file for this machine and thread count."""
    return _CACHE.path(machine_key(threads))


def forget_memory() -> None:
    """Drop the in-process copy of the cache files (tests; a changed cache directory)."""
    _CACHE.forget()


def cached_entries(threads: int) -> dict[str, Any]:
    """This machine's tuning entries for ``threads`` ({layer key: entry}; read-only use)."""
    return _CACHE.entries(machine_key(threads))[1]


def layer_key(layer, bucket: int) -> str:
    """The cache key of a layer and batch bucket (threads are in the file's machine key); an
    N:M layer's key names its pattern (``:nm2of4``), as its candidates differ."""
    nm = layer.nm_pattern
    return (
        f"{layer.in_features}x{layer.out_features}:n{layer.values.shape[0]}:"
        f"k{layer.values.shape[1]}:all{int(layer._all_active)}:b{bucket}"
        + (f":nm{nm[0]}of{nm[1]}" if nm else "")
    )


def candidates(isa: int, batch: int, threads: int, packs) -> list[tuple[int, tuple]]:
    """(variant code, permute pack or ()) pairs worth timing for ``batch`` rows; ``packs``:
    the (lanes, block, windows) permute packs to time."""
    pars = (0, 1) if threads > 1 else (0,)
    levels = [isa] if isa == 0 else [lv for lv in range(1, isa + 1)]
    out: list[tuple[int, tuple]] = []
    for lv in levels:
        name = ops.ISAS[lv]
        for par in pars:
            if batch <= 32:
                out.append((ops.encode(name, "rows", parallel=bool(par)), ()))
                out.append((ops.encode(name, "nm", parallel=bool(par)), ()))  # N:M packs only
                if lv == isa:
                    for pack in packs:
                        if tuple(pack[:2]) in ops.perm_geometries(lv):
                            out.append((ops.encode(name, "perm", parallel=bool(par)), pack))
            if batch >= 5:
                for family in ("tiled", "tiledkb"):
                    for wide in ops.WIDTHS:
                        if batch <= 16 and wide:
                            continue
                        out.append((ops.encode(name, family, wide, bool(par)), ()))
    return out


def measure(layer, batch: int, threads: int) -> dict[tuple[int, tuple], float]:
    """The fastest call, in seconds, of every candidate for ``batch`` rows on ``threads`` threads
    (candidates interleaved over ``ROUNDS`` rounds of about ``ROUND_SECONDS`` each)."""
    o = ops.load()
    isa = int(o.fused_isa())
    current = (*layer.perm_geometry, layer.perm_windows)
    if layer._perm_locked:  # another batch already runs a permute variant on this pack
        packs = [current]
    else:  # each geometry with either window layout (the layer's own pack is one of them)
        packs = [(*g, w) for g in ops.perm_geometries(isa) for w in (1, 2)]
    blobs = {current: layer.kernel_blob}
    x = torch.randn(batch, layer.in_features)
    fns = {}
    for code, pack in candidates(isa, batch, threads, [p for p in packs if p[:2] != (0, 0)]):
        if pack and pack not in blobs:
            blobs[pack] = layer._pack(pack[:2], pack[2])
        blob = blobs[pack] if pack else layer.kernel_blob
        if not o.fused_runs_here(blob, code):
            continue
        fns[(code, pack)] = lambda b=blob, c=code: o.fused_linear_variant(
            x, b, c, layer.out_features, False
        )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:  # parallel variants timed on the OpenMP team (backends.kernels.parallel_mode)
        with torch.inference_mode(), on_team(o.pool_set_mode):
            return fastest_interleaved(fns, ROUNDS, ROUND_SECONDS, MIN_CALLS, MAX_CALLS)
    finally:
        torch.set_num_threads(before)


def _pack_name(code: int, pack: tuple) -> str:
    """The variant's name with its permute pack ((lanes, block, windows) or ())."""
    return ops.variant_name(code, pack[1], pack[0], pack[2]) if pack else ops.variant_name(code)


def _timed_entry(layer, key: str, batch: int, threads: int) -> dict[str, Any]:
    """Time the candidates for ``batch`` rows; the cache entry of the winner."""
    timed, host = time_while_given(
        lambda: measure(layer, batch, threads),
        threads,
        lambda key: bool(ops.decode(key[0]).parallel),
    )
    (code, pack), best = min(timed.items(), key=lambda kv: kv[1])
    name = _pack_name(code, pack)
    us = best * 1e6
    log.info("tuned %s at batch %d, %d threads: %s (%.1f us)", key, batch, threads, name, us)
    return {
        "variant": int(code),
        "geometry": list(pack[:2]),
        "windows": int(pack[2]) if pack else 0,
        "batch": batch,
        "fastest_us": {
            _pack_name(c, p): round(t * 1e6, 2)
            for (c, p), t in sorted(timed.items(), key=lambda kv: kv[1])
        },
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **host,
    }


def _installable(entry: dict[str, Any]) -> tuple[int, tuple, int]:
    """(variant, geometry, windows) of a cache entry, as ``FusedLinear._install`` takes them."""
    return int(entry["variant"]), tuple(entry["geometry"]), int(entry.get("windows", 0))


def tune_layer(
    layer, batches, threads: int | None = None, force: bool = False, measure_missing: bool = True
) -> dict[int, str]:
    """Pick and install the variant of ``layer`` (a C++ ``fused`` layer) for each batch size.

    Args:
        layer: a ``FusedLinear`` on CPU whose C++ kernel is loaded.
        batches: batch sizes (rows of x) to tune; one result per bucket.
        threads: thread count to tune for (default: ``torch.get_num_threads()``).
        force: time again even where the cache has an entry.
        measure_missing: time buckets the cache lacks (False: install cached winners only).

    Returns:
        {batch: variant name}.
    """
    threads = threads or torch.get_num_threads()
    chosen = {}
    with _lock:
        machine = machine_key(threads)
        _, entries = _CACHE.entries(machine)
        dirty = False
        for batch in batches:
            batch = max(1, int(batch))
            bucket = bucket_of(batch)
            key = layer_key(layer, bucket)
            entry = entries.get(key)
            if entry is not None and measure_missing and tuned_under_load(entry, threads):
                entry = None  # timed on a loaded machine, now it is quiet: time again
            if entry is None and not measure_missing:
                continue
            if entry is None or force:
                entry = entries[key] = _timed_entry(layer, key, batch, threads)
                dirty = True
            try:
                layer._install(threads, bucket, *_installable(entry))
            except (KeyError, TypeError, ValueError, RuntimeError) as err:  # stale or edited
                _CACHE.drop(machine, key, str(err).splitlines()[0])
                dirty = True
                if not measure_missing:
                    continue
                entry = entries[key] = _timed_entry(layer, key, batch, threads)
                layer._install(threads, bucket, *_installable(entry))
            chosen[batch] = layer.variant_for(batch, threads)
        if dirty:
            _CACHE.save(machine)
    return chosen
