"""The issue-10 table: the ``fused`` CPU kernel end to end against dense ``F.linear`` and CSR.

    .venv/bin/python scripts/measure_fused.py [--threads 2] [--min-run-time 0.3] [--rounds 3]
        [--shapes 768x3072,3072x768] [--sparsities 0.8,0.9,0.95,0.99] [--batches 1,4,17,197,256]
        [--force-tune] [--all-variants]

For every (shape, sparsity, batch): builds the layer once (constant fan-in mask), lets the
autotuner pick the variant (``--force-tune`` times again instead of reading this machine's
cache), checks the output against ``F.linear``, then times fused, dense and csr interleaved in
the same process (``suite.bench.timing.measure_interleaved``: ratios of measurements taken
side by side). Prints a Markdown table: median microseconds, fused x dense, fused x csr, the
variant that ran, and the 1-minute load average (a load above the core count marks a loaded
machine: take the numbers for a note with nothing else running). ``--all-variants`` adds, per
case, the tuner's fastest call for every candidate it timed.

``--per-core`` instead times every serial variant (each pack geometry) and dense ``F.linear``
on one thread in CPU time of the calling thread (``time.thread_time``, fastest of ``--calls``
calls): time other processes hold the core is not counted, so this per-core comparison of the
micro-kernels is stable on a loaded machine (it says nothing about the parallel variants).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from functools import partial

import torch
import torch.nn.functional as F

import backends
from backends.kernels import linear_tuner as tuner
from backends.kernels import ops
from backends.kernels.build import cpu_model
from backends.kernels.tune_cache import fastest_call
from srigl.masks import constant_fan_in_mask
from suite.bench.timing import measure_interleaved
from suite.runtime import set_threads, thread_policy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-run-time", type=float, default=0.3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--shapes", default="768x3072,3072x768")
    p.add_argument("--sparsities", default="0.8,0.9,0.95,0.99")
    p.add_argument("--batches", default="1,4,17,197,256")
    p.add_argument("--force-tune", action="store_true")
    p.add_argument("--all-variants", action="store_true")
    p.add_argument("--per-core", action="store_true", help="serial variants, CPU time, 1 thread")
    p.add_argument("--calls", type=int, default=200)
    a = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if a.per_core:
        per_core(a)
        return
    set_threads(a.threads)
    ok, why = backends.available("fused", "cpu")
    policy = thread_policy()
    print(
        f"threads={policy['threads']} OMP_WAIT_POLICY={policy['omp_wait_policy']} "
        f"load_avg_1m={policy['load_avg_1m']} cores={os.cpu_count()} cpu={cpu_model()!r} "
        f"fused: {'C++ ' + ops.ISAS[int(ops.load().fused_isa())] if ops.available()[0] else why}"
    )
    print(
        "| in->out | sparsity | batch | dense us | csr us | fused us | fused x dense "
        "| fused x csr | variant | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        in_f, out_f = map(int, shape.split("x"))
        for sp in map(float, a.sparsities.split(",")):
            g = torch.Generator().manual_seed(1)
            weight = torch.randn(out_f, in_f, generator=g) / in_f**0.5
            bias = torch.randn(out_f, generator=g)
            mask = constant_fan_in_mask((out_f, in_f), sp, g)
            masked = weight * mask
            fused = backends.create("fused", weight, mask, bias, layer_name=shape)
            csr = backends.create("csr", weight, mask, bias, layer_name=shape)
            batches = [int(b) for b in a.batches.split(",")]
            if hasattr(fused, "tune"):
                fused.tune(batches, threads=a.threads, force=a.force_tune)
            for batch in batches:
                x = torch.randn(batch, in_f, generator=g)
                with torch.no_grad():
                    ref = F.linear(x, masked, bias)
                    torch.testing.assert_close(fused(x), ref, rtol=1e-4, atol=1e-4)
                    fns = {
                        "dense": partial(F.linear, x, masked, bias),
                        "csr": partial(csr, x),
                        "fused": partial(fused, x),
                    }
                    t = measure_interleaved(fns, a.threads, a.min_run_time, a.rounds)
                d, c, f = (t[n].median_s for n in ("dense", "csr", "fused"))
                print(
                    f"| {in_f}->{out_f} | {sp} | {batch} | {d * 1e6:.1f} | {c * 1e6:.1f} | "
                    f"{f * 1e6:.1f} | {d / f:.2f} | {c / f:.2f} | {fused.variant_for(batch)} | "
                    f"{thread_policy()['load_avg_1m']} |",
                    flush=True,
                )
                if a.all_variants and getattr(fused, "_cpp", False):
                    entries = tuner.cached_entries(a.threads)
                    entry = entries.get(tuner.layer_key(fused, tuner.bucket_of(batch)), {})
                    times = entry.get("fastest_us")
                    print(f"|  |  |  | tuner (batch {entry.get('batch')}): {times} |")


def _case(in_f: int, out_f: int, sp: float):
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(out_f, in_f, generator=g) / in_f**0.5
    bias = torch.randn(out_f, generator=g)
    return weight, constant_fan_in_mask((out_f, in_f), sp, g), bias, g


def fastest_cpu_call(fn, calls: int) -> float:
    """The fastest of ``calls`` calls of ``fn`` in CPU seconds of this thread."""
    return fastest_call(fn, calls, clock=time.thread_time)


def per_core(a) -> None:
    """Serial variants vs dense F.linear, one thread, CPU time (see the module docstring)."""
    set_threads(1)
    o = ops.load()
    isa = int(o.fused_isa())
    print(f"per core, CPU time, fastest of {a.calls} calls; ISA {ops.ISAS[isa]}")
    print("| in->out | sparsity | batch | dense us | best variant | us | x dense | others (us) |")
    print("|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        in_f, out_f = map(int, shape.split("x"))
        for sp in map(float, a.sparsities.split(",")):
            weight, mask, bias, g = _case(in_f, out_f, sp)
            layer = backends.create("fused", weight, mask, bias)
            blobs = {(0, 0): layer._pack((0, 0))}
            for level in range(1, isa + 1):
                for geo in ops.perm_geometries(level):
                    blobs[geo] = layer._pack(geo)
            masked = weight * mask
            for batch in map(int, a.batches.split(",")):
                x = torch.randn(batch, in_f, generator=g)
                dense = fastest_cpu_call(partial(F.linear, x, masked, bias), a.calls)
                times = {}
                for geo, blob in blobs.items():
                    for code in tuner.candidates(isa, batch, 1, [geo] if geo[0] else []):
                        code, cgeo = code
                        if (cgeo or (0, 0)) != geo or not o.fused_runs_here(blob, code):
                            continue
                        fn = partial(o.fused_linear_variant, x, blob, code, out_f, False)
                        name = ops.variant_name(code, geo[1], geo[0])
                        times[name] = fastest_cpu_call(fn, a.calls)
                best = min(times, key=times.get)
                others = ", ".join(f"{n} {t * 1e6:.0f}" for n, t in sorted(times.items()))
                print(
                    f"| {in_f}->{out_f} | {sp} | {batch} | {dense * 1e6:.1f} | {best} | "
                    f"{times[best] * 1e6:.1f} | {dense / times[best]:.2f} | {others} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
