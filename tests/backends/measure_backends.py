"""Measure every backend against dense ``F.linear`` on the ViT-B/16 MLP shapes (a script, not a
test): ``.venv/bin/python tests/backends/measure_backends.py [--reps 5] [--backends fused,csr]``.

Per (shape, sparsity, batch) all layers are built once; then ``--reps`` rounds each time every
backend and dense with ``torch.utils.benchmark.Timer(num_threads=T).blocked_autorange``, one
after the other, so each ratio pairs measurements taken close in time (the machine is shared:
medians over rounds). Prints a markdown table: median time, speed-up vs dense and vs CSR, and
for batch 1 the GB/s over the bytes a kernel must read/write (values + indices + x + out; for
dense: weight + x + out). ``kernel`` rows time ``forward_transposed`` on [in, B] input.
``best x dense`` is a load-robust supplement: the ratio of the fastest single calls (min over
all rounds), which finds the quiet moments of a busy machine.

``scripts/measure_fused.py`` prints the issue-10 table of the C++ fused kernel (variants picked by
its autotuner). ``--per-core`` here compares serial builds of the numba kernels (the fallback
of the fused backend without a C++ compiler) with dense ``F.linear``
on one torch thread, in CPU time of the calling thread (``time.thread_time``, fastest call):
time other processes hold the core is not counted, so this is the stable per-core figure on a
shared machine. (Timing the installed parallel kernels with a thread clock would be wrong:
numba's pool may run the work on another thread.)
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

import backends
from backends.condensed import CondensedLinear
from backends.fused_cpu import NumbaCondensed, kernel_index_dtype


def constant_fan_in_mask(out_f: int, in_f: int, sparsity: float, seed: int = 0) -> torch.Tensor:
    """bool [out, in] with k = round(in * (1 - sparsity)) random columns per row."""
    g = torch.Generator().manual_seed(seed)
    k = max(1, round(in_f * (1 - sparsity)))
    cols = torch.rand(out_f, in_f, generator=g).argsort(dim=1)[:, :k]
    return torch.zeros(out_f, in_f, dtype=torch.bool).scatter_(1, cols, True)


def layer_bytes(name: str, layer, batch: int) -> int:
    """Bytes a kernel must move: its weights (values + indices, or the dense weight) + x + y."""
    io = 4 * batch * (layer.in_features + layer.out_features)
    if isinstance(layer, CondensedLinear):
        idx = 4 if name in ("naive", "compiled", "csr", "coo") else 2
        if name in ("fused", "fused_triton"):
            idx = torch.tensor([], dtype=kernel_index_dtype(layer.in_features)).element_size()
        return layer.values.numel() * (4 + idx) + io
    return 4 * layer.in_features * layer.out_features + io


def timeit(fn, threads: int, min_run_time: float) -> float:
    t = Timer("fn()", globals={"fn": fn}, num_threads=threads)
    return t.blocked_autorange(min_run_time=min_run_time).median


def per_core(shapes: str, sparsities: str, batches: str, calls: int = 400) -> None:
    """Print kernel-only CPU time per call, serial fused kernels vs dense F.linear (1 thread)."""
    import numpy as np

    from backends import _numba_kernels

    torch.set_num_threads(1)
    src = open(_numba_kernels.__file__).read().replace("parallel=True", "parallel=False")
    serial: dict = {}
    exec(compile(src.replace("cache=True", "cache=False"), "serial_kernels", "exec"), serial)
    print(
        "| in->out | sparsity | batch | dense us | fused us | x dense | fused GB/s | dense GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for shape in shapes.split(","):
        in_f, out_f = map(int, shape.split("x"))
        for sp in map(float, sparsities.split(",")):
            g = torch.Generator().manual_seed(1)
            weight = torch.randn(out_f, in_f, generator=g) / in_f**0.5
            bias = torch.randn(out_f, generator=g)
            mask = constant_fan_in_mask(out_f, in_f, sp)
            layer = backends.create("fused", weight, mask, bias)
            numba_layer = NumbaCondensed(
                layer.values, layer.kernel_indices, layer.active, layer.bias, layer._all_active
            )
            v, idx, act, b = numba_layer.args
            wd = weight * mask
            for batch in map(int, batches.split(",")):
                x = torch.randn(batch, in_f, generator=g)
                xn, out = x.numpy(), np.empty((batch, out_f), np.float32)
                if batch <= 6:
                    run = partial(serial["rows_kernel"], v, idx, act, b, xn, out)
                else:
                    run = partial(serial["tiled_kernel"], v, idx, act, b, xn, out, 1)
                run()
                ref = F.linear(x, wd, bias)
                torch.testing.assert_close(torch.from_numpy(out), ref, rtol=1e-4, atol=1e-4)
                td = fastest_call(partial(F.linear, x, wd, bias), calls, time.thread_time)
                tf = fastest_call(run, calls, time.thread_time)
                io = 4 * batch * (in_f + out_f)
                gf = (v.size * (4 + idx.itemsize) + io) / tf / 1e9 if batch == 1 else float("nan")
                gd = (4 * in_f * out_f + io) / td / 1e9 if batch == 1 else float("nan")
                print(
                    f"| {in_f}->{out_f} | {sp} | {batch} | {td * 1e6:.1f} | {tf * 1e6:.1f} | "
                    f"{td / tf:.2f} | {gf:.1f} | {gd:.1f} |",
                    flush=True,
                )


def fastest_call(fn, calls: int, clock=time.perf_counter) -> float:
    """The fastest of ``calls`` single calls of ``fn``, in seconds of ``clock``."""
    best = float("inf")
    for _ in range(calls):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--min-run-time", type=float, default=0.1)
    p.add_argument("--backends", default="dense,structured,naive,csr,coo,compiled,fused")
    p.add_argument("--shapes", default="768x3072,3072x768")
    p.add_argument("--sparsities", default="0.9,0.99")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--per-core", action="store_true", help="serial kernels, CPU time, 1 thread")
    a = p.parse_args()
    if a.per_core:
        per_core(a.shapes, a.sparsities, a.batches)
        return
    torch.set_num_threads(a.threads)
    names = [n for n in a.backends.split(",") if backends.available(n, "cpu")[0]]
    print(f"threads={a.threads} reps={a.reps} (median over reps; ratios paired per rep)")
    print(
        "| in->out | sparsity | batch | backend | mode | median us | x dense | x csr | GB/s "
        "| best us | best x dense | best GB/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in a.shapes.split(","):
        in_f, out_f = map(int, shape.split("x"))
        for sp in map(float, a.sparsities.split(",")):
            g = torch.Generator().manual_seed(1)
            weight = torch.randn(out_f, in_f, generator=g) / in_f**0.5
            bias = torch.randn(out_f, generator=g)
            mask = constant_fan_in_mask(out_f, in_f, sp)
            layers = {n: backends.create(n, weight, mask, bias, layer_name=shape) for n in names}
            for batch in map(int, a.batches.split(",")):
                x = torch.randn(batch, in_f, generator=g)
                xt = x.T.contiguous()
                ref = F.linear(x, weight * mask, bias)
                fns = {}
                with torch.no_grad():
                    for n, layer in layers.items():
                        torch.testing.assert_close(layer(x), ref, rtol=1e-4, atol=1e-4)
                        fns[(n, "end_to_end")] = lambda layer=layer, x=x: layer(x)
                        if hasattr(layer, "forward_transposed"):
                            torch.testing.assert_close(layer.forward_transposed(xt).T, ref)
                            fns[(n, "kernel")] = lambda lay=layer, xt=xt: lay.forward_transposed(xt)
                    wd = weight * mask
                    fns[("F.linear", "end_to_end")] = lambda x=x, w=wd, b=bias: F.linear(x, w, b)
                    times = {key: [] for key in fns}
                    best = {key: float("inf") for key in fns}
                    calls = 50 if batch <= 8 else 5
                    for _ in range(a.reps):
                        for key, fn in fns.items():
                            times[key].append(timeit(fn, a.threads, a.min_run_time))
                            best[key] = min(best[key], fastest_call(fn, calls))
                dense = times[("F.linear", "end_to_end")]
                csr = times.get(("csr", "end_to_end"))
                for (n, mode), ts in times.items():
                    med = statistics.median(ts)
                    xd = statistics.median(d / t for d, t in zip(dense, ts))
                    xc = statistics.median(c / t for c, t in zip(csr, ts)) if csr else float("nan")
                    layer = layers.get(n, layers.get("dense"))
                    gbs = layer_bytes(n, layer, batch) / med / 1e9 if batch == 1 else float("nan")
                    bd = best[("F.linear", "end_to_end")] / best[(n, mode)]
                    nbytes = layer_bytes(n, layer, batch)
                    bgbs = nbytes / best[(n, mode)] / 1e9 if batch == 1 else float("nan")
                    print(
                        f"| {in_f}->{out_f} | {sp} | {batch} | {n} | {mode} | {med * 1e6:.1f} | "
                        f"{xd:.2f} | {xc:.2f} | {gbs:.1f} | {best[(n, mode)] * 1e6:.1f} | "
                        f"{bd:.2f} | {bgbs:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
