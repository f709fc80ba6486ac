"""Issue 20 item 5: the parallel ``fused`` kernel quiet and with busy processes beside it.

    .venv/bin/python scripts/measure_load.py [--shapes 3072x768] [--batches 1,256]
        [--loads 0,1] [--rounds 30] [--threads 2] [--old-csrc DIR]

For each shape, batch and load (number of ``while True: pass`` processes, suite.bench.load),
times in interleaved blocks (one block of each candidate per round, order rotated): the fused
kernel's static-rule variant on the work pool (``fused/pool``), the same variant serial
(``fused/serial``), dense ``F.linear`` and the ``dense_kernel`` backend. ``--old-csrc DIR``
adds ``fused/old``: the same variant from another copy of the fused sources (e.g. the OpenMP
version, its ``TORCH_LIBRARY`` namespace renamed to ``srigl_old``), built once into the kernel
cache. Prints median microseconds per call over rounds with the interquartile range, and the
1-minute load average: wall times on a shared machine, rough A/B only.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import time

import torch
import torch.nn.functional as F

import backends
from backends.kernels import ops
from backends.kernels.build import load_extension
from srigl.masks import constant_fan_in_mask
from suite.bench.load import cpu_load


def candidates(in_f: int, out_f: int, batch: int, old: bool) -> dict:
    """name -> zero-argument call, for one ViT-like layer at 90%."""
    torch.manual_seed(0)
    weight, bias = torch.randn(out_f, in_f), torch.randn(out_f)
    mask = constant_fan_in_mask(weight.shape, 0.9, torch.Generator().manual_seed(0))
    fused = backends.create("fused", weight, mask, bias).eval()
    dense_k = backends.create("dense_kernel", weight, mask, bias).eval()
    x = torch.randn(batch, in_f)
    o, blob = ops.load(), fused.kernel_blob
    code = int(o.fused_resolve(blob, torch.empty(0, dtype=torch.int32), batch, 2)) | 1
    masked = weight * mask
    calls = {
        "fused/pool": lambda: o.fused_linear_variant(x, blob, code, out_f, False),
        "fused/serial": lambda: o.fused_linear_variant(x, blob, code - 1, out_f, False),
        "F.linear": lambda: F.linear(x, masked, bias),
        "dense_kernel": lambda: dense_k(x),
    }
    if old:
        calls["fused/old"] = lambda: torch.ops.srigl_old.fused_linear_variant(
            x, blob, code, out_f, False
        )
    ref = F.linear(x, masked, bias)
    for name, call in calls.items():
        torch.testing.assert_close(call(), ref, rtol=1e-3, atol=1e-3, msg=name)
    return calls, ops.variant_name(code, 0, 0)


def time_rounds(calls: dict, rounds: int, block_s: float = 0.01) -> dict:
    """Median and IQR (microseconds per call) over interleaved blocks of each call."""
    reps = {}
    for name, call in calls.items():
        t = time.perf_counter()
        call()
        reps[name] = max(1, int(block_s / max(time.perf_counter() - t, 1e-6)))
    samples = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            call, n = calls[name], reps[name]
            t = time.perf_counter()
            for _ in range(n):
                call()
            samples[name].append((time.perf_counter() - t) / n * 1e6)
    out = {}
    for name, s in samples.items():
        q = statistics.quantiles(s, n=4)
        out[name] = (statistics.median(s), q[2] - q[0])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--shapes", default="3072x768")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--loads", default="0,1")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--old-csrc", type=pathlib.Path)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.old_csrc:
        load_extension("srigl_fused_old", sorted(a.old_csrc.iterdir()))
    print("| shape | batch | load | variant | " + " | ".join(["candidate: median us (IQR)"]))
    for shape in a.shapes.split(","):
        in_f, out_f = map(int, shape.split("x"))
        for batch in map(int, a.batches.split(",")):
            calls, variant = candidates(in_f, out_f, batch, a.old_csrc is not None)
            for load in map(int, a.loads.split(",")):
                with cpu_load(load):
                    time.sleep(0.2)
                    res = time_rounds(calls, a.rounds)
                    la = os.getloadavg()[0]
                cells = " | ".join(f"{n} {m:.0f} ({iqr:.0f})" for n, (m, iqr) in res.items())
                print(
                    f"| {in_f}->{out_f} | {batch} | {load} | {variant} | {cells} | la {la:.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
