"""The machine's limits and where a layer's timing stands against them (a roofline).

:func:`probe_machine` measures, on the threads a bench uses:

- ``fma_gflops``: peak fp32 FMA throughput, from independent FMA chains in the dense C++
  extension (``srigl_dense::dense_probe_fma``, the widest SIMD level the CPU has); where the
  extension cannot load, from ``torch.mm`` of 1024 x 1024 matrices (``fma_source`` says which);
- ``bandwidth_gbs``: read bandwidth from L2, L3 and memory: every thread sums its share of a
  buffer sized to fit that level (half of each thread's L2, a quarter of the L3, and 256 MiB or
  8x the L3 for memory), many times over (``srigl_dense::dense_probe_read``; ``torch.sum`` as
  the fallback). Sizes come from ``/sys/devices/system/cpu/cpu0/cache`` where it exists.

:func:`machine_probe` runs it once per machine and thread count and caches the result as JSON
beside the tuner's cache (``<cache dir>/tuner/machine-<asv name>-<threads>t.json``, see
:func:`backends.kernels.build.cache_dir`). :func:`roofline_fields` turns one bench timing into
achieved GFLOP/s, bytes per call, arithmetic intensity, the relevant limit and the percentage
of it reached. ``python -m suite.bench machine [--force] [--threads N]`` prints the probe.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import pathlib
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from backends.fused_cpu import kernel_index_dtype
from backends.kernels.build import cache_dir
from backends.kernels.tune_cache import fastest_call
from suite.machine import ISA_LEVELS

log = logging.getLogger(__name__)

SCHEMA = 1
LEVELS = ("l2", "l3", "memory")
_FALLBACK_CACHE = {"l2": 512 << 10, "l3": 32 << 20}  # where sysfs says nothing
_MEMORY_BYTES = 256 << 20

Clock = Callable[[], float]


@dataclass(frozen=True)
class MachineProbe:
    """One machine's measured limits on ``threads`` threads.

    Attributes:
        machine: ``suite.machine.identity()["asv_name"]``. threads: threads the probe used.
        fma_gflops: peak fp32 GFLOP/s (an FMA counts 2). fma_source: what measured it.
        bandwidth_gbs: read GB/s (1e9 bytes) per level ``l2``, ``l3``, ``memory``.
        read_source: what measured the bandwidth.
        cache_bytes: capacity the threads have per level: ``l2`` (per-core L2 x threads),
            ``l3`` (the shared L3); a working set that fits neither is read from ``memory``.
        buffer_bytes: the probe's buffer per level.
    """

    machine: str
    threads: int
    fma_gflops: float
    fma_source: str
    bandwidth_gbs: dict[str, float]
    read_source: str
    cache_bytes: dict[str, int]
    buffer_bytes: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the cache file's ``probe``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MachineProbe:
        """The probe of :meth:`to_json`; ``ValueError`` names what is missing or bad."""
        try:
            probe = cls(
                machine=str(data["machine"]),
                threads=int(data["threads"]),
                fma_gflops=float(data["fma_gflops"]),
                fma_source=str(data["fma_source"]),
                bandwidth_gbs={k: float(data["bandwidth_gbs"][k]) for k in LEVELS},
                read_source=str(data["read_source"]),
                cache_bytes={k: int(data["cache_bytes"][k]) for k in ("l2", "l3")},
                buffer_bytes={k: int(v) for k, v in dict(data.get("buffer_bytes", {})).items()},
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"not a machine probe ({type(err).__name__}: {err})") from None
        if not all(v > 0 for v in (probe.fma_gflops, *probe.bandwidth_gbs.values())):
            raise ValueError(f"machine probe with non-positive limits: {probe}")
        return probe


# ---------------------------------------------------------------------- measuring
def best_rate(
    run: Callable[[int], object],
    work_per_rep: float,
    clock: Clock = time.perf_counter,
    min_seconds: float = 0.02,
    repeats: int = 5,
    max_reps: int = 1 << 40,
) -> float:
    """The highest rate (work per second of ``clock``) of ``run(reps)``, which does
    ``reps * work_per_rep`` units of work: ``reps`` doubles from 1 until one call takes at least
    ``min_seconds``, then the fastest of ``repeats`` calls counts (other processes only ever
    add time)."""
    if work_per_rep <= 0:
        raise ValueError(f"work_per_rep must be > 0, got {work_per_rep}")
    reps = 1
    while True:
        t0 = clock()
        run(reps)
        if clock() - t0 >= min_seconds or reps >= max_reps:
            break
        reps *= 2
    seconds = fastest_call(lambda: run(reps), repeats, clock)
    if not seconds > 0:
        raise ValueError(f"the clock measured {seconds} s for {reps} reps; it must advance")
    return reps * work_per_rep / seconds


def cache_sizes(root: str | os.PathLike = "/sys/devices/system/cpu/cpu0/cache") -> dict[str, int]:
    """Bytes of cpu0's unified/data caches by level (``{"l1": .., "l2": .., "l3": ..}``) from
    sysfs (``index*/level``, ``type``, ``size`` such as ``1024K``); empty where unreadable."""
    out: dict[str, int] = {}
    for index in sorted(pathlib.Path(root).glob("index*")):
        try:
            level = int((index / "level").read_text())
            kind = (index / "type").read_text().strip()
            size = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        if kind == "Instruction" or not size:
            continue
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
        try:
            out[f"l{level}"] = int(size.rstrip("KMG")) * scale
        except ValueError:
            continue
    return out


def buffer_sizes(caches: Mapping[str, int], threads: int) -> dict[str, int]:
    """The probe's buffer per level: half of each thread's L2 (x threads), a quarter of the L3
    (at most half of it beyond the threads' L2s), and 256 MiB or 8x the L3 for memory."""
    l2 = caches.get("l2", _FALLBACK_CACHE["l2"])
    l3 = caches.get("l3", _FALLBACK_CACHE["l3"])
    return {
        "l2": l2 // 2 * threads,
        "l3": max(l3 // 4, l2 * threads * 2),
        "memory": max(_MEMORY_BYTES, 8 * l3),
    }


def _dense_ops() -> Any | None:
    try:
        from backends import dense_kernel

        return dense_kernel.load()
    except Exception as err:  # noqa: BLE001  (any build/load failure: the fallback serves)
        log.warning("dense C++ extension unavailable for the machine probe (%s); torch serves", err)
        return None


def probe_machine(
    threads: int | None = None,
    clock: Clock = time.perf_counter,
    min_seconds: float = 0.05,
    repeats: int = 5,
    ops: Any | None = None,
    buffers: Mapping[str, int] | None = None,
) -> MachineProbe:
    """Measure this machine's FMA peak and read bandwidths on ``threads`` threads (default:
    torch's). ``ops``: the ``torch.ops.srigl_dense`` namespace (default: loaded; where it
    cannot load, the torch fallbacks run). ``buffers``: bytes of the probe's buffer per level
    (default: :func:`buffer_sizes` of this CPU's caches)."""
    from suite.machine import identity

    threads = int(threads or torch.get_num_threads())
    ops = ops if ops is not None else _dense_ops()
    isa = ISA_LEVELS[int(ops.dense_isa())] if ops is not None else ""
    if ops is not None:
        per_iter = float(ops.dense_probe_fma_flops_per_iter()) * threads
        flops = best_rate(
            lambda n: ops.dense_probe_fma(n, threads), per_iter, clock, min_seconds, repeats
        )
        fma_source = f"srigl_dense C++ FMA chains ({isa}, {threads} threads)"
    else:
        n = 1024
        a, b = torch.randn(n, n), torch.randn(n, n)

        def mm(reps: int) -> None:
            for _ in range(reps):
                torch.mm(a, b)

        flops = best_rate(mm, 2.0 * n**3, clock, min_seconds, repeats)
        fma_source = f"torch.mm {n}x{n} fp32 (fallback; {threads} threads)"
    caches = cache_sizes()
    sizes = dict(buffers) if buffers is not None else buffer_sizes(caches, threads)
    bandwidth = {}
    for level in LEVELS:
        buf = torch.ones(sizes[level] // 4)
        if ops is not None:
            rate = best_rate(
                lambda n, buf=buf: ops.dense_probe_read(buf, n, threads),
                float(buf.numel() * 4),
                clock,
                min_seconds,
                repeats,
            )
        else:

            def total(reps: int, buf: torch.Tensor = buf) -> None:
                for _ in range(reps):
                    buf.sum()

            rate = best_rate(total, float(buf.numel() * 4), clock, min_seconds, repeats)
        bandwidth[level] = rate / 1e9
        del buf
    read_source = (
        f"srigl_dense C++ sum-reduce ({isa}, {threads} threads)"
        if ops is not None
        else f"torch.sum (fallback; {threads} threads)"
    )
    l2 = caches.get("l2", _FALLBACK_CACHE["l2"])
    return MachineProbe(
        machine=str(identity()["asv_name"]),
        threads=threads,
        fma_gflops=flops / 1e9,
        fma_source=fma_source,
        bandwidth_gbs=bandwidth,
        read_source=read_source,
        cache_bytes={"l2": l2 * threads, "l3": caches.get("l3", _FALLBACK_CACHE["l3"])},
        buffer_bytes=sizes,
    )


# ---------------------------------------------------------------------- the cache
def probe_path(machine: str, threads: int) -> pathlib.Path:
    """The cache file of ``machine`` (an asv machine name) on ``threads`` threads."""
    return cache_dir() / "tuner" / f"machine-{machine}-{int(threads)}t.json"


def machine_probe(threads: int | None = None, force: bool = False) -> MachineProbe:
    """This machine's probe on ``threads`` threads (default: torch's): read from its cache
    file, else (or with ``force``) measured (a few seconds) and written there atomically. A
    cache file that does not parse or names another machine is measured again."""
    from suite.machine import identity

    threads = int(threads or torch.get_num_threads())
    machine = str(identity()["asv_name"])
    path = probe_path(machine, threads)
    if not force:
        try:
            data = json.loads(path.read_text())
            if data.get("schema") == SCHEMA:
                probe = MachineProbe.from_json(data["probe"])
                if probe.machine == machine and probe.threads == threads:
                    return probe
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            log.warning("ignoring the machine probe cache %s (%s); probing again", path, err)
    probe = probe_machine(threads)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump({"schema": SCHEMA, "probe": probe.to_json()}, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("cannot write the machine probe cache %s: %s", path, err)
    return probe


# ---------------------------------------------------------------------- roofline
def roofline_fields(
    in_features: int,
    out_features: int,
    batch: int,
    density: float,
    seconds: float,
    probe: MachineProbe,
    index_bytes: int | None = None,
    value_bytes: int = 4,
) -> dict[str, Any]:
    """Where one call of a Linear layer stands on ``probe``'s roofline.

    The layer keeps k = round(density * in_features) (at least 1) inputs per output (a
    condensed layer's fan-in; pass ``density=1`` for a dense baseline, which multiplies by
    every weight). Multiply-adds = batch * out * k; FLOPs = 2 x that.
    Bytes per call = weights (out * k * (value_bytes + index_bytes)) + bias (out * value_bytes)
    + x read (batch * in * value_bytes) + y written (batch * out * value_bytes); ``index_bytes``
    defaults to 0 when density is 1 (dense), else 2 below 32768 inputs (int16) and 4 above.
    The working set (those bytes) fits L2 (the threads' L2s together), else the L3, else it is
    read from memory: that level's bandwidth x intensity, capped by the FMA peak, is the limit.

    Returns:
        ``{"macs", "gflops", "bytes_per_call", "intensity_flop_per_byte", "roofline_level",
        "limit_gflops", "limit_kind" ("compute" | "bandwidth"), "pct_of_limit"}``.

    Raises:
        ValueError: a negative size, density outside (0, 1], or seconds not finite and > 0.
    """
    if min(in_features, out_features, batch) < 0:
        raise ValueError(
            f"sizes must be >= 0, got in={in_features} out={out_features} batch={batch}"
        )
    if not 0 < density <= 1:
        raise ValueError(f"density must be in (0, 1], got {density}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"seconds must be finite and > 0, got {seconds}")
    k = max(1, round(density * in_features)) if in_features else 0
    if index_bytes is None:
        index_bytes = 0 if density >= 1 else kernel_index_dtype(in_features).itemsize
    macs = batch * out_features * k
    flops = 2.0 * macs
    nbytes = (
        out_features * k * (value_bytes + index_bytes)
        + out_features * value_bytes
        + batch * in_features * value_bytes
        + batch * out_features * value_bytes
    )
    intensity = flops / nbytes if nbytes else 0.0
    if nbytes <= probe.cache_bytes["l2"]:
        level = "l2"
    elif nbytes <= probe.cache_bytes["l3"]:
        level = "l3"
    else:
        level = "memory"
    bandwidth_limit = intensity * probe.bandwidth_gbs[level]
    limit = min(probe.fma_gflops, bandwidth_limit)
    gflops = flops / seconds / 1e9
    return {
        "macs": macs,
        "gflops": gflops,
        "bytes_per_call": nbytes,
        "intensity_flop_per_byte": intensity,
        "roofline_level": level,
        "limit_gflops": limit,
        "limit_kind": "compute" if probe.fma_gflops <= bandwidth_limit else "bandwidth",
        "pct_of_limit": 100.0 * gflops / limit if limit > 0 else 0.0,
    }


# ---------------------------------------------------------------------- CLI
def format_probe(probe: MachineProbe) -> str:
    """The probe as a few lines of text."""
    mib = 1 << 20
    lines = [
        f"machine {probe.machine}, {probe.threads} threads",
        f"FMA peak    {probe.fma_gflops:9.1f} GFLOP/s   ({probe.fma_source})",
    ]
    for level in LEVELS:
        size = probe.buffer_bytes.get(level, 0) / mib
        lines.append(
            f"read {level:<7}{probe.bandwidth_gbs[level]:9.1f} GB/s      ({size:g} MiB buffer)"
        )
    lines.append(f"read source: {probe.read_source}")
    caps = ", ".join(f"{k} {v / mib:g} MiB" for k, v in probe.cache_bytes.items())
    lines.append(f"cache capacity the threads have: {caps}")
    return "\n".join(lines)


def cli(argv: list[str] | None = None) -> int:
    """``python -m suite.bench machine [--force] [--threads N] [--json]``: print the probe
    (measured once per machine and thread count, then read from its cache)."""
    parser = argparse.ArgumentParser(
        prog="python -m suite.bench machine",
        description="This machine's FMA peak and L2/L3/memory read bandwidth (cached).",
    )
    parser.add_argument("--threads", type=int, default=None, help="default: torch's threads")
    parser.add_argument("--force", action="store_true", help="measure again, ignore the cache")
    parser.add_argument("--json", action="store_true", help="print the probe as JSON")
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    probe = machine_probe(args.threads, force=args.force)
    if args.json:
        print(json.dumps(probe.to_json(), indent=1, sort_keys=True))
    else:
        print(format_probe(probe))
        print(f"cache: {probe_path(probe.machine, probe.threads)}")
    return 0
