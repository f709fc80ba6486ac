"""``python -m suite.bench vs-probe``: the ``fused`` kernel against this CPU's C probe, paired.

The C probes (``suite/bench/probes/probe_kernels.h``) are what this CPU allows for a condensed
layer with no framework around it. Compared in separate runs, a noisy host (the same build
timed 2x apart within minutes) decides the ratio; so this runner loads the probe kernels as a
library (built here with ``-march=native``) and times them in the same process, on the same
weights and inputs, in interleaved blocks (:func:`backends.timing.paired_ratios`), against:

- ``fused_native``: the ``fused`` layer's packed kernel called back to back from C++
  (``srigl::fused_linear_repeat``: the same dispatch, allocation and work pool per call, no
  Python and no torch dispatcher between calls), which is how the probe is timed: kernel
  against kernel;
- ``fused``: the layer's eager ``forward`` from Python, what a user runs (the difference is the
  per-call overhead: Python, the torch dispatcher);
- ``probe_aa``: the probe against itself (the A/A control: how far apart two identical
  callables come out in this run).

Each cell first picks the probe's fastest layout (batch 1: the permute packs; batch 256: the
register-tile kernels) by a short timing, checks the probe's and the layer's outputs against
each other, then runs ``pairs`` rounds. The record (``results/probes/probe-<id>.json``, written
atomically) carries the machine, the load before and after, every ratio with its 95% interval,
and which probe layout and fused variant ran. The probe needs AVX-512 (``avx512f``): elsewhere
the runner says so and stops. ``python -m suite.bench vs-probe`` sets ``GOMP_SPINCOUNT=10000``
before torch loads (unless set): the probe's OpenMP threads then stop spinning ~20 us after a
region instead of libgomp's ~ms, which would have run beside the next block (fused's).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import backends
from backends.kernels import ops
from backends.kernels.build import cache_dir
from backends.timing import aa_noise, fastest_of, paired_ratios
from srigl.masks import constant_fan_in_mask
from suite import machine
from suite.bench.side_run import markdown_rows, parse_numbers, parse_shapes, write_side_record
from suite.report.vs_probe import COLUMNS, display_row

log = logging.getLogger(__name__)

PROBE_DIR = pathlib.Path(__file__).with_name("probes")
SOURCES = ("probe_lib.c", "probe_kernels.h", "common.h")
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
#: batch-1 probe layouts: (name, kernel id, lanes W, window B, aligned, threshold T)
B1_LAYOUTS = (
    ("zmm vpermt2ps B32 slide T=8", 0, 16, 32, 0, 8),
    ("zmm vpermt2ps B32 slide T=10", 0, 16, 32, 0, 10),
    ("zmm vpermt2ps B32 aligned", 0, 16, 32, 1, 1),
    ("zmm vpermps B16 aligned", 1, 16, 16, 1, 1),
)
#: batch-256 probe layouts: (name, variant id, needs out % (16 * threads) == 0)
B256_LAYOUTS = (
    ("zmm TW=32 2x2 acc", 3, False),
    ("zmm TW=64 4 acc", 4, False),
    ("zmm TW=32 gather-transposed", 0, True),
    ("zmm TW=64 gather-transposed", 1, True),
)
DEFAULT_ROOT = pathlib.Path("results/probes")


class ProbeUnavailableError(RuntimeError):
    """The probe library cannot be built or run here (no AVX-512, no C compiler)."""


def cpu_flags() -> set[str]:
    """The CPU flags of ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_probe_library() -> pathlib.Path:
    """Compile ``probes/probe_lib.c`` for this CPU (cached by source and flags); its path.

    Raises:
        ProbeUnavailableError: the CPU lacks avx512f, or no C compiler / the build failed.
    """
    if "avx512f" not in cpu_flags():
        raise ProbeUnavailableError(
            "the probe kernels need AVX-512 (avx512f); this CPU's flags lack it"
        )
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise ProbeUnavailableError("no C compiler found (set $CC or install gcc)")
    h = hashlib.sha256()
    for name in SOURCES:
        h.update((PROBE_DIR / name).read_bytes())
    h.update(" ".join((cc, *CFLAGS)).encode())
    lib = cache_dir() / "probes" / f"probe_lib-{h.hexdigest()[:16]}.so"
    if lib.is_file():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    cmd = [cc, *CFLAGS, "-o", str(tmp), str(PROBE_DIR / "probe_lib.c"), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        tmp.unlink(missing_ok=True)
        first = (done.stderr.strip().splitlines() or ["(no output)"])[0]
        raise ProbeUnavailableError(f"building the probe library failed: {first}")
    os.replace(tmp, lib)
    return lib


class ProbeLibrary:
    """ctypes handle of the probe library: batch-1 permute packs and batch-256 tile kernels."""

    def __init__(self, path: pathlib.Path) -> None:
        lib = ctypes.CDLL(str(path))
        p, i = ctypes.c_void_p, ctypes.c_int
        lib.probe_set_threads.argtypes, lib.probe_set_threads.restype = [i], i
        lib.probe_b1_new.argtypes = [i, i, i, p, p, p, i, i, i, i]
        lib.probe_b1_new.restype = p
        lib.probe_b1_run.argtypes, lib.probe_b1_run.restype = [p, i, p, p, i], None
        lib.probe_b1_free.argtypes, lib.probe_b1_free.restype = [p], None
        lib.probe_b256_run.argtypes = [i, i, i, i, p, p, p, p, p, i]
        lib.probe_b256_run.restype = i
        lib.probe_b256_batch.restype = i
        self.lib = lib
        self.batch256 = int(lib.probe_b256_batch())


def _ptr(a: np.ndarray) -> int:
    return a.ctypes.data


@dataclass
class Cell:
    """One layer of the comparison: its shape, fan-in and the arrays both sides read."""

    in_features: int
    out_features: int
    sparsity: float
    batch: int
    idx: np.ndarray  # int32 [out, k], ascending per row
    values: np.ndarray  # float32 [out, k]
    bias: np.ndarray  # float32 [out]
    x: np.ndarray  # float32 [batch, in]

    @property
    def k(self) -> int:
        return int(self.idx.shape[1])

    def masked_weight(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, mask) float32 / bool [out, in]: the kept values at their indices, zero
        elsewhere, and where they are (what ``backends.create`` takes)."""
        rows = torch.arange(self.out_features)[:, None]
        cols = torch.from_numpy(self.idx).long()
        weight = torch.zeros(self.out_features, self.in_features)
        weight[rows, cols] = torch.from_numpy(self.values)
        mask = torch.zeros(weight.shape, dtype=torch.bool)
        mask[rows, cols] = True
        return weight, mask


def make_cell(in_f: int, out_f: int, sparsity: float, batch: int, seed: int = 0) -> Cell:
    """A constant fan-in layer (``srigl.masks.constant_fan_in_mask``) with random weights, bias
    and input x [batch, in] (float32), the same for the probe and ``fused``."""
    gen = torch.Generator().manual_seed(seed)
    mask = constant_fan_in_mask((out_f, in_f), sparsity, gen)
    k = int(mask.sum(dim=1)[0])
    idx = mask.nonzero()[:, 1].reshape(out_f, k).to(torch.int32)
    values = torch.randn(out_f, k, generator=gen) / k**0.5
    bias = torch.randn(out_f, generator=gen) * 0.1
    x = torch.randn(batch, in_f, generator=gen)
    return Cell(
        in_f, out_f, sparsity, batch, *(t.contiguous().numpy() for t in (idx, values, bias, x))
    )


def check_cell(cell: Cell, threads: int, batch256: int) -> None:
    """Raise ValueError naming the value when the probe kernels cannot run this cell."""
    if cell.batch not in (1, batch256):
        raise ValueError(f"batch={cell.batch} is not probed; allowed: 1 or {batch256}")
    if cell.out_features % 16 or cell.in_features % 32:
        raise ValueError(
            f"shape {cell.in_features}->{cell.out_features} is not probed; allowed: in a "
            "multiple of 32 and out a multiple of 16"
        )
    if cell.k < 1:
        raise ValueError(f"sparsity={cell.sparsity} leaves no weight per neuron")
    if threads < 1:
        raise ValueError(f"threads={threads} is invalid; allowed: >= 1")


def _probe_callables(lib: ProbeLibrary, cell: Cell, threads: int, y: np.ndarray):
    """{layout name: callable(calls)} of the probe layouts that run this cell (batch 1: packs
    are built here and freed by the returned cleanup)."""
    handles, keep, fns = [], [], {}  # b1 packs to free; arrays the callables point into
    if cell.batch == 1:
        for name, kern, w, b, aligned, t in B1_LAYOUTS:
            h = lib.lib.probe_b1_new(
                cell.in_features,
                cell.out_features,
                cell.k,
                _ptr(cell.idx),
                _ptr(cell.values),
                _ptr(cell.bias),
                w,
                b,
                aligned,
                t,
            )
            handles.append(h)
            fns[name] = partial(lib.lib.probe_b1_run, h, kern, _ptr(cell.x), _ptr(y))
    else:
        ix16 = np.ascontiguousarray(cell.idx.astype(np.uint16))
        keep.append(ix16)
        for name, var, needs_split in B256_LAYOUTS:
            if needs_split and cell.out_features % (16 * threads):
                continue
            fns[name] = partial(
                lib.lib.probe_b256_run,
                var,
                cell.in_features,
                cell.out_features,
                cell.k,
                _ptr(cell.values),
                _ptr(ix16),
                _ptr(cell.x),
                _ptr(cell.bias),
                _ptr(y),
            )

    def cleanup() -> None:
        for h in handles:
            lib.lib.probe_b1_free(h)
        keep.clear()

    return fns, cleanup


def _reference(cell: Cell) -> np.ndarray:
    xs = cell.x.astype(np.float64)
    return np.einsum("bok,ok->bo", xs[:, cell.idx], cell.values.astype(np.float64)) + cell.bias


def _fastest(fn, calls: int, blocks: int = 5) -> float:
    """Seconds per call of the fastest of ``blocks`` blocks of ``fn(calls)`` (``fn`` runs
    ``calls`` calls itself)."""
    return fastest_of(partial(fn, calls), blocks, time.perf_counter) / calls


def compare_cell(
    lib: ProbeLibrary, cell: Cell, threads: int, pairs: int = 20, block_seconds: float = 0.02
) -> dict[str, Any]:
    """Pair the probe's fastest layout with ``fused`` (C++ loop and Python forward) and the
    probe itself (A/A) on ``cell``; one result row (times in seconds per call)."""
    check_cell(cell, threads, lib.batch256)
    lib.lib.probe_set_threads(threads)
    y = np.zeros((cell.batch, cell.out_features), dtype=np.float32)
    ref = _reference(cell)
    scale = np.abs(cell.x.astype(np.float64)[:, cell.idx]).sum(axis=2).max() + 1.0
    fns, cleanup = _probe_callables(lib, cell, threads, y)
    try:
        for name, fn in fns.items():
            y[:] = np.nan
            fn(1)
            err = float(np.abs(y - ref).max())
            if not err <= 1e-5 * scale:
                raise AssertionError(f"probe layout {name!r} disagrees with the reference: {err}")
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            quick = {
                name: _fastest(fn, max(1, int(2e-4 / max(_fastest(fn, 1, 2), 1e-7))))
                for name, fn in fns.items()
            }
        finally:
            torch.set_num_threads(before)
        layout = min(quick, key=quick.get)
        probe = fns[layout]
        reps = max(1, round(2e-4 / quick[layout]))  # calls per probe callable: ~200 us
        weight, mask = cell.masked_weight()
        layer = backends.create("fused", weight, mask, torch.from_numpy(cell.bias))
        x = torch.from_numpy(cell.x)
        with torch.inference_mode():
            torch.set_num_threads(threads)
            try:
                got = layer(x)  # tunes (or reads the tuning cache) for this batch
            finally:
                torch.set_num_threads(before)
        err = float((got.double() - torch.from_numpy(ref)).abs().max())
        if not err <= 1e-5 * scale:
            raise AssertionError(f"fused disagrees with the reference: {err}")
        op = ops.load().fused_linear_repeat
        blob, table, out_f = layer._blob, layer._table, cell.out_features
        ratios = paired_ratios(
            lambda: probe(reps),
            {
                "probe_aa": lambda: probe(reps),
                "fused_native": lambda: op(x, blob, table, out_f, False, reps),
                "fused": lambda: layer(x),
            },
            pairs=pairs,
            block_seconds=block_seconds,
            threads=threads,
        )
    finally:
        cleanup()
    per_call = {"probe_aa": reps, "fused_native": reps, "fused": 1}
    row: dict[str, Any] = {
        "in_features": cell.in_features,
        "out_features": cell.out_features,
        "sparsity": cell.sparsity,
        "batch": cell.batch,
        "k": cell.k,
        "threads": threads,
        "probe_layout": layout,
        "probe_layouts_us": {n: t * 1e6 for n, t in quick.items()},
        "fused_variant": layer.variant_for(cell.batch, threads),
        "probe_calls_per_sample": reps,
        "n_pairs": pairs,
    }
    base = ratios["probe_aa"].baseline_s
    row["probe_median_s"] = float(np.median(base)) / reps
    for key, r in ratios.items():
        # baseline block = reps probe calls; candidate block = per_call[key] calls: the time
        # ratio candidate / probe per call is (1 / speedup) * reps / per_call
        scale_k = reps / per_call[key]
        row[f"{key}_median_s"] = float(np.median(r.candidate_s)) / per_call[key]
        row[f"{key}_over_probe"] = scale_k / r.speedup
        row[f"{key}_over_probe_ci_low"] = scale_k / r.ci_high
        row[f"{key}_over_probe_ci_high"] = scale_k / r.ci_low
    row["overhead_s"] = row["fused_median_s"] - row["fused_native_median_s"]
    row["aa_noise"] = aa_noise(
        row["probe_aa_over_probe_ci_low"], row["probe_aa_over_probe_ci_high"]
    )
    return row


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of result rows (microseconds, ratios with 95% intervals), the report's
    columns (:func:`suite.report.vs_probe.display_row`)."""
    return markdown_rows(rows, COLUMNS, display_row)


def cli(argv: list[str] | None = None) -> int:
    """``python -m suite.bench vs-probe [--shapes 3072x768,768x3072] [--sparsities 0.9,0.99]
    [--batches 1,256] [--threads 2] [--pairs 20] [--out results/probes]``."""
    p = argparse.ArgumentParser(
        prog="python -m suite.bench vs-probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--shapes", default="3072x768,768x3072")
    p.add_argument("--sparsities", default="0.9,0.99")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--block-seconds", type=float, default=0.02)
    p.add_argument("--skip", default="0.99@256", help="sparsity@batch cells left out")
    p.add_argument("--out", default=str(DEFAULT_ROOT))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shapes = parse_shapes(a.shapes)
    sparsities = parse_numbers(a.sparsities, float, "--sparsities")
    batches = parse_numbers(a.batches, int, "--batches")
    skip = {tuple(c.split("@")) for c in a.skip.split(",") if c}
    try:
        lib = ProbeLibrary(build_probe_library())
    except ProbeUnavailableError as err:
        print(f"vs-probe: {err}", file=sys.stderr)
        return 2
    start = machine.mark_start(a.threads)  # with the cores the host gives (core_scaling)
    config = {
        "task": "vs_probe",
        "shapes": shapes,
        "sparsities": sparsities,
        "batches": batches,
        "threads": a.threads,
        "pairs": a.pairs,
        "block_seconds": a.block_seconds,
        "skip": sorted("@".join(c) for c in skip),
        "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    }
    cells = [
        (i, o, s, b)
        for (i, o) in shapes
        for s in sparsities
        for b in batches
        if (f"{s:g}", str(b)) not in skip
    ]
    rows = []
    for i, o, s, b in tqdm(cells, desc="vs-probe", unit="cell"):
        try:
            rows.append(
                compare_cell(lib, make_cell(i, o, s, b), a.threads, a.pairs, a.block_seconds)
            )
        except ValueError as err:
            print(f"vs-probe: {i}->{o} {s:g} batch {b}: {err}", file=sys.stderr)
            return 2
    path = write_side_record("vs_probe", "probe", config, rows, start, a.out)
    print(format_rows(rows))
    print(f"record: {path}")
    return 0
