"""``python -m suite.bench under-load``: how much slower ``fused`` gets beside busy processes,
paired with its quiet time in one run.

Timed in separate runs, a loaded and a quiet time are two samples of a host whose speed drifts
by more than the effect (the same layer timed 2x apart within minutes here). So this runner
starts the busy processes once (``python -c 'while True: pass'``, :func:`suite.bench.load.cpu_load`)
and switches them on and off (``SIGCONT`` / ``SIGSTOP``) between interleaved blocks
(:func:`backends.timing.interleaved_blocks`): every round times, in one order reversed every
other round,

- ``fused`` quiet and loaded, and ``fused`` quiet again (the A/A control: two quiet blocks of the
  same callable);
- dense ``F.linear`` (what users run) quiet and loaded;

and the row gives, each from the pairs with its 95% interval
(:func:`backends.timing.ratio_interval`): ``slowdown`` (fused loaded / fused quiet),
``dense_slowdown``, ``speedup_vs_dense_loaded`` (dense loaded / fused loaded: > 1 while fused
stays faster than dense under load), and ``aa`` (quiet / quiet again).

Steady states, not transitions: before a quiet block the kernels' ``SRIGL_PARALLEL=auto``
state is reset (to torch's OpenMP team, where a quiet machine keeps it); before a loaded block
the layer runs ``settle_seconds`` untimed with the load on, so auto has moved to what a lasting
load gives it (pool or serial jobs: ``backends/kernels/csrc/work_pool.h``). Which paths the
loaded blocks ran is recorded (``loaded_jobs``: team, pool and serial jobs of the fused
extension). The issue-20 goal is a slowdown within 1.5x at batch 1 and 2x at larger batches
(whose work needs both cores), and fused never slower than dense: ``verdict`` says ``met``
when the interval's high end is within the target, ``missed`` when its low end is above it,
else ``undecided``; ``faster_than_dense`` likewise from ``speedup_vs_dense_loaded``.

The record goes to ``results/load/load-<id>.json`` (written atomically) with the machine, the
load average at the start and end, and every block's seconds.
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

import backends
from backends.kernels.parallel_mode import restart_auto
from backends.timing import calls_per_block, interleaved_blocks, mean_block, ratio_interval
from suite import machine
from suite.bench.load import check_load, cpu_load
from suite.bench.side_run import markdown_rows, parse_numbers, parse_shapes, write_side_record
from suite.bench.vs_probe import make_cell
from suite.report.under_load import COLUMNS, display_row

log = logging.getLogger(__name__)

DEFAULT_ROOT = pathlib.Path("results/load")
#: slowdown targets (loaded / quiet): batch 1, larger batches
TARGET_BATCH1 = 1.5
TARGET_LARGER = 2.0
KEYS = ("fused_quiet", "fused_loaded", "fused_quiet_aa", "dense_quiet", "dense_loaded")


class LoadSwitch:
    """Pauses and resumes busy processes (``SIGSTOP`` / ``SIGCONT``); starts paused."""

    def __init__(self, procs: Sequence[subprocess.Popen]) -> None:
        self.procs = list(procs)
        self.on = True
        self.set(False)

    def set(self, on: bool) -> None:
        """Run the processes (``on``) or pause them; a no-op when already so. Pausing returns
        once Linux shows them stopped (a signal arrives asynchronously; at most 0.1 s)."""
        if on == self.on:
            return
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT if on else signal.SIGSTOP)
        self.on = on
        if not on:
            deadline = time.monotonic() + 0.1
            while time.monotonic() < deadline and not all(map(_stopped, self.procs)):
                time.sleep(0.0005)


def process_state(pid: int) -> str | None:
    """The state letter of process ``pid`` in ``/proc/<pid>/stat`` (R running, S sleeping, T
    stopped, Z zombie...), or None where /proc cannot tell (no such process, not Linux)."""
    try:
        text = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()[0]


def _stopped(proc: subprocess.Popen) -> bool:
    """Whether ``proc`` is stopped, or gone (True where /proc cannot tell)."""
    state = process_state(proc.pid)
    return state is None or state in "TtZX"


@dataclass
class Condition:
    """A callable timed with the load on (``loaded``) or off."""

    fn: Callable[[], object]
    loaded: bool

    def __call__(self) -> object:
        return self.fn()


def target_for(batch: int) -> float:
    """The slowdown target of a batch size: 1.5 at batch 1, 2.0 above."""
    return TARGET_BATCH1 if batch == 1 else TARGET_LARGER


def verdict_within(low: float, high: float, target: float) -> str:
    """``met`` when ``high`` <= target, ``missed`` when ``low`` > target, else ``undecided``."""
    if high <= target:
        return "met"
    if low > target:
        return "missed"
    return "undecided"


def _fused_ops() -> Any:
    """The fused extension's operators, or None where it does not load (nothing to reset or
    count then)."""
    from backends.kernels import ops

    return ops.load() if ops.available()[0] else None


def _block_timer(
    switch: LoadSwitch, settle_seconds: float, fused: Callable[[], object], jobs: dict[str, int]
) -> Callable[[Condition, int], float]:
    """The block timer of :func:`measure_cell`: switches the load for the block's condition,
    brings the kernels to that condition's steady state (quiet: auto mode reset; loaded: the
    callable run ``settle_seconds`` untimed), then times ``calls`` calls; adds the fused
    extension's team / pool / serial jobs of loaded fused blocks to ``jobs``."""
    o = _fused_ops()

    def stats() -> list[int]:
        return list(o.pool_stats()) if o is not None else []

    def block(fn: Condition, calls: int) -> float:
        switch.set(fn.loaded)
        if fn.loaded:
            end = time.perf_counter() + settle_seconds
            while time.perf_counter() < end:
                fn()
        elif o is not None:
            restart_auto(o.pool_set_mode)
        before = stats()
        seconds = mean_block(fn, calls)
        after = stats()
        if fn.loaded and fn.fn is fused and len(after) >= 8:
            jobs["team"] += after[4] - before[4]
            jobs["pool"] += after[1] - before[1]
            jobs["serial"] += after[7] - before[7]
        return seconds

    return block


def ratio_fields(samples: dict[str, list[float]], batch: int) -> dict[str, Any]:
    """The row's times and ratios from the blocks' seconds ``{key: [s, ...]}`` (:data:`KEYS`):
    medians, ``slowdown``, ``dense_slowdown``, ``speedup_vs_dense_loaded`` and ``aa`` with
    their 95% intervals, the target of ``batch``, ``verdict`` and ``faster_than_dense``."""
    row: dict[str, Any] = {f"{key}_median_s": statistics.median(samples[key]) for key in KEYS}
    for name, (base, cand) in {
        "slowdown": ("fused_loaded", "fused_quiet"),  # loaded / quiet
        "dense_slowdown": ("dense_loaded", "dense_quiet"),
        "speedup_vs_dense_loaded": ("dense_loaded", "fused_loaded"),
        "aa": ("fused_quiet_aa", "fused_quiet"),
    }.items():
        est, low, high = ratio_interval(samples[base], samples[cand])
        row[name], row[f"{name}_ci_low"], row[f"{name}_ci_high"] = est, low, high
    row["target"] = target_for(batch)
    row["verdict"] = verdict_within(row["slowdown_ci_low"], row["slowdown_ci_high"], row["target"])
    low, high = row["speedup_vs_dense_loaded_ci_low"], row["speedup_vs_dense_loaded_ci_high"]
    row["faster_than_dense"] = "yes" if low > 1.0 else "no" if high < 1.0 else "undecided"
    return row


def measure_cell(
    in_f: int,
    out_f: int,
    sparsity: float,
    batch: int,
    switch: LoadSwitch,
    threads: int,
    pairs: int = 20,
    block_seconds: float = 0.02,
    settle_seconds: float = 0.05,
) -> dict[str, Any]:
    """One row: fused and dense ``F.linear`` on a constant fan-in layer (``make_cell``), quiet
    and loaded blocks interleaved (see the module docstring). Times in seconds per call."""
    if pairs < 2:
        raise ValueError(f"pairs={pairs!r} is invalid; allowed: an integer >= 2")
    if not block_seconds > 0 or settle_seconds < 0:
        raise ValueError(
            f"block_seconds={block_seconds!r}, settle_seconds={settle_seconds!r} are invalid; "
            "allowed: block_seconds > 0, settle_seconds >= 0"
        )
    cell = make_cell(in_f, out_f, sparsity, batch)
    weight, mask = cell.masked_weight()
    bias = torch.from_numpy(cell.bias)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.from_numpy(cell.x)
    jobs = {"team": 0, "pool": 0, "serial": 0}

    def fused() -> object:
        return layer(x)

    def dense() -> object:
        return F.linear(x, weight, bias)

    fns = {
        "fused_quiet": Condition(fused, False),
        "fused_loaded": Condition(fused, True),
        "fused_quiet_aa": Condition(fused, False),
        "dense_quiet": Condition(dense, False),
        "dense_loaded": Condition(dense, True),
    }
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            got = layer(x)  # tunes (or reads the tuner's cache) quiet
            want = F.linear(x.double(), weight.double(), bias.double())
            if not torch.allclose(got.double(), want, rtol=1e-4, atol=1e-4):
                raise AssertionError(f"fused disagrees with F.linear on {in_f}->{out_f}")
            switch.set(False)
            calls = {
                k: calls_per_block(f, block_seconds, sizing_seconds=0.005) for k, f in fns.items()
            }
            block = _block_timer(switch, settle_seconds, fused, jobs)
            samples = interleaved_blocks(fns, pairs, calls, block)
    finally:
        switch.set(False)
        torch.set_num_threads(previous)
    return {
        "in_features": in_f,
        "out_features": out_f,
        "sparsity": sparsity,
        "batch": batch,
        "k": cell.k,
        "threads": threads,
        "fused_variant": layer.variant_for(batch, threads),
        "n_pairs": pairs,
        "calls_per_block": calls,
        "settle_seconds": settle_seconds,
        "samples_s": {k: list(v) for k, v in samples.items()},
        "loaded_jobs": jobs,
        **ratio_fields(samples, batch),
    }


def format_rows(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table of result rows, the report's columns
    (:func:`suite.report.under_load.display_row`)."""
    return markdown_rows(rows, COLUMNS, display_row)


def cli(argv: list[str] | None = None) -> int:
    """``python -m suite.bench under-load [--shapes 768x3072,3072x768] [--sparsities 0.9,0.99]
    [--batches 1,256] [--load 1] [--threads 2] [--pairs 20] [--out results/load]``."""
    p = argparse.ArgumentParser(
        prog="python -m suite.bench under-load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--shapes", default="768x3072,3072x768")
    p.add_argument("--sparsities", default="0.9,0.99")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--load", type=int, default=1, help="busy processes beside the loaded blocks")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--block-seconds", type=float, default=0.02)
    p.add_argument("--settle-seconds", type=float, default=0.05)
    p.add_argument("--out", default=str(DEFAULT_ROOT))
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    shapes = parse_shapes(a.shapes)
    sparsities = parse_numbers(a.sparsities, float, "--sparsities")
    batches = parse_numbers(a.batches, int, "--batches")
    bad = [s for s in sparsities if not 0.0 <= s < 1.0] + [b for b in batches if b < 1]
    if bad or a.threads < 1 or a.pairs < 2 or a.load < 1:
        p.error(
            f"invalid value(s) {bad or [a.threads, a.pairs, a.load]}; allowed: sparsities in "
            "[0, 1), batches >= 1, --threads >= 1, --pairs >= 2, --load >= 1"
        )
    check_load(a.load)
    start = machine.mark_start(a.threads)  # with the cores the host gives (core_scaling)
    config = {
        "task": "under_load",
        "shapes": shapes,
        "sparsities": sparsities,
        "batches": batches,
        "load": a.load,
        "threads": a.threads,
        "pairs": a.pairs,
        "block_seconds": a.block_seconds,
        "settle_seconds": a.settle_seconds,
        "SRIGL_PARALLEL": os.environ.get("SRIGL_PARALLEL", "auto"),
    }
    cells = [(i, o, s, b) for (i, o) in shapes for s in sparsities for b in batches]
    rows = []
    with cpu_load(a.load) as procs:
        switch = LoadSwitch(procs)
        for i, o, s, b in tqdm(cells, desc="under-load", unit="cell"):
            try:
                rows.append(
                    measure_cell(
                        i, o, s, b, switch, a.threads, a.pairs, a.block_seconds, a.settle_seconds
                    )
                )
            except ValueError as err:
                print(f"under-load: {i}->{o} {s:g} batch {b}: {err}", file=sys.stderr)
                return 2
    path = write_side_record("under_load", "load", config, rows, start, a.out)
    print(format_rows(rows))
    print(f"record: {path}")
    return 0
