"""The project's one timer: interleaved blocks, and paired ratios with a bootstrap interval.

Everything that times code in this project goes through this module: the bench (layer rows and
whole models), the asv ratio benchmarks and the autotuners (fused Linear, direct conv).

- :func:`calls_per_block` sizes a block of calls for one callable (one warm-up call first).
- :func:`interleaved_blocks` runs blocks of several callables in turns, the order reversed every
  other round (two callables: A B | B A | A B ..., i.e. ABBA), so that load on a shared machine
  hits them alike; it returns one per-call time per block and callable.
- :func:`ratio_interval` estimates ``baseline / candidate`` from paired blocks: the geometric mean
  of the per-pair ratios (= ratio of the geometric means of the two sides' blocks) with a 95%
  percentile-bootstrap interval over the pairs (small-sample corrected).
- :func:`quotient_interval`: the quotient of two paired speed-ups of one run over the same
  baseline (vs CSR, vs the best dense backend) with its interval.
- :func:`paired_ratio` / :func:`paired_ratios` put these together: calibrate, alternate, estimate,
  and keep the per-block samples (:class:`PairedRatio`).
- :func:`aa_noise` and :func:`verdict` read intervals: an A/A interval (a callable against an
  identical copy of itself) that misses 1.0 or is wider than +-10% marks a run noisy; a speed-up
  whose interval holds 1.0 is "no measurable difference".

A block is timed by a :data:`BlockTimer` ``(fn, calls) -> seconds``: :func:`mean_block` (wall
time per call over the block: what the ratios use) or :func:`fastest_call_block` (the fastest
single call of the block: the autotuners' selection statistic). Tests pass their own, synthetic,
block timers. The loop is a plain ``time.perf_counter`` loop rather than
``torch.utils.benchmark.Timer.timeit``: ``timeit`` adds a warm-up of at least two calls to every
block, which triples the cost of the one-call blocks of a whole model; threads are set here, and
CUDA work is synchronised before each clock read, as ``torch.utils.benchmark`` does.

Only ``torch`` and ``numpy`` are imported: ``backends`` is the lowest layer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = [
    "AA_TOLERANCE",
    "NO_DIFFERENCE",
    "BlockTimer",
    "PairedRatio",
    "TimingError",
    "aa_noise",
    "calls_per_block",
    "fastest_call_block",
    "fastest_of",
    "interleaved_blocks",
    "mean_block",
    "paired_ratio",
    "paired_ratios",
    "quotient_interval",
    "ratio_interval",
    "verdict",
]

K = TypeVar("K", bound=Hashable)
#: ``(fn, calls) -> seconds``: one block of ``calls`` calls of ``fn`` reduced to one number.
BlockTimer = Callable[[Callable[[], object], int], float]

CONFIDENCE = 0.95
N_BOOTSTRAP = 4000
MIN_PAIRS = 2
SIZING_SECONDS = 0.02  # calibration run of paired measurements (at most half a block)


class TimingError(ValueError):
    """A timing argument is outside its allowed range (the message names value and range)."""


def _clock() -> float:
    """``time.perf_counter``, after waiting for queued CUDA work (as torch.utils.benchmark)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
    return time.perf_counter()


def mean_block(fn: Callable[[], object], calls: int) -> float:
    """Wall time per call, in seconds, of ``calls`` back-to-back calls of ``fn``."""
    start = _clock()
    for _ in range(calls):
        fn()
    return (_clock() - start) / calls


def fastest_of(fn: Callable[[], object], calls: int, clock: Callable[[], float]) -> float:
    """The fastest single call of ``calls`` calls of ``fn``, in seconds of ``clock``."""
    best = math.inf
    for _ in range(calls):
        start = clock()
        fn()
        best = min(best, clock() - start)
    return best


def fastest_call_block(fn: Callable[[], object], calls: int) -> float:
    """The fastest single call of ``calls`` calls of ``fn``, in seconds (wall time)."""
    return fastest_of(fn, calls, _clock)


def calls_per_block(
    fn: Callable[[], object],
    block_seconds: float,
    min_calls: int = 1,
    max_calls: int = 10_000,
    sizing_seconds: float = 0.0,
) -> int:
    """How many calls of ``fn`` fill about ``block_seconds``, clipped to
    ``[min_calls, max_calls]``.

    One warm-up call, then the time per call: of one call (``sizing_seconds`` = 0, the
    autotuners' cheap sizing), else of a run of calls doubled until it lasts
    ``sizing_seconds`` (as ``timeit``'s autorange: a single call of a microsecond layer is
    mostly clock overhead, and two sides of one pair sized from single calls may get different
    call counts, hence different overhead per call).
    """
    if not block_seconds > 0:
        raise TimingError(f"block_seconds={block_seconds!r} is invalid; allowed: > 0 seconds")
    if not 1 <= min_calls <= max_calls:
        raise TimingError(
            f"min_calls={min_calls!r}, max_calls={max_calls!r} are invalid; "
            "allowed: 1 <= min_calls <= max_calls"
        )
    fn()
    if sizing_seconds <= 0:
        once = fastest_call_block(fn, 1)
    else:
        n = 1
        while True:
            once = mean_block(fn, n)
            if once * n >= sizing_seconds or n >= max_calls:
                break
            n *= 2
    return max(min_calls, min(max_calls, int(block_seconds / max(once, 1e-7))))


def interleaved_blocks(
    fns: Mapping[K, Callable[[], object]],
    rounds: int,
    calls: Mapping[K, int],
    block: BlockTimer = mean_block,
) -> dict[K, list[float]]:
    """Time ``rounds`` blocks of every callable in turns, the order reversed every other round.

    Args:
        fns: the callables, in their first round's order.
        rounds: number of rounds (>= 1); round ``r`` of callable ``k`` is sample ``r`` of ``k``,
            so samples of the same index are pairs measured next to each other.
        calls: calls per block of each callable (see :func:`calls_per_block`).
        block: the block statistic (:func:`mean_block`, :func:`fastest_call_block`, or a
            synthetic sampler in tests).

    Returns:
        ``{key: [seconds of block 0, block 1, ...]}``.
    """
    if int(rounds) < 1:
        raise TimingError(f"rounds={rounds!r} is invalid; allowed: an integer >= 1")
    samples: dict[K, list[float]] = {key: [] for key in fns}
    order = list(fns)
    for r in range(int(rounds)):
        for key in order if r % 2 == 0 else order[::-1]:
            samples[key].append(float(block(fns[key], int(calls[key]))))
    return samples


def ratio_interval(
    baseline_s: Sequence[float],
    candidate_s: Sequence[float],
    confidence: float = CONFIDENCE,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of the speed-up ``baseline / candidate`` from paired blocks.

    The estimate is the geometric mean of the per-pair ratios ``baseline_i / candidate_i``; the
    interval is the percentile bootstrap of that mean over pairs, widened by ``sqrt(n / (n - 1))``
    around the estimate (the plain percentile bootstrap is too narrow with few pairs).

    Args:
        baseline_s, candidate_s: per-block seconds, same length >= 2, all > 0; element ``i`` of
            both was measured in the same round.
        confidence: two-sided level in (0, 1).
        n_bootstrap: resamples (>= 100). seed: the resampling generator's seed.

    Raises:
        TimingError: lengths differ, fewer than 2 pairs, a time is not > 0, or a bad level.
    """
    base = np.asarray(baseline_s, dtype=float)
    cand = np.asarray(candidate_s, dtype=float)
    if base.shape != cand.shape or base.ndim != 1:
        raise TimingError(
            f"paired samples must be two lists of one length, got {base.shape} and {cand.shape}"
        )
    if len(base) < MIN_PAIRS:
        raise TimingError(f"{len(base)} pair(s) given; allowed: at least {MIN_PAIRS} pairs")
    if not (np.all(base > 0) and np.all(cand > 0) and np.all(np.isfinite(base + cand))):
        raise TimingError("paired samples must be finite times > 0 seconds")
    if not 0.0 < confidence < 1.0:
        raise TimingError(f"confidence={confidence!r} is invalid; allowed: 0 < confidence < 1")
    if int(n_bootstrap) < 100:
        raise TimingError(f"n_bootstrap={n_bootstrap!r} is invalid; allowed: >= 100")
    logs = np.log(base) - np.log(cand)
    n, mean = len(logs), float(logs.mean())
    rng = np.random.default_rng(seed)
    boot = logs[rng.integers(0, n, size=(int(n_bootstrap), n))].mean(axis=1)
    boot = mean + (boot - mean) * math.sqrt(n / (n - 1))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    return math.exp(mean), math.exp(float(low)), math.exp(float(high))


def _log_ratios(baseline_s: Sequence[float], candidate_s: Sequence[float]) -> np.ndarray:
    base = np.asarray(baseline_s, dtype=float)
    cand = np.asarray(candidate_s, dtype=float)
    if base.shape != cand.shape or base.ndim != 1 or len(base) < MIN_PAIRS:
        raise TimingError(
            f"paired samples must be two lists of one length >= {MIN_PAIRS}, got {base.shape} "
            f"and {cand.shape}"
        )
    if not (np.all(base > 0) and np.all(cand > 0) and np.all(np.isfinite(base + cand))):
        raise TimingError("paired samples must be finite times > 0 seconds")
    return np.log(base) - np.log(cand)


def quotient_interval(
    numerator: tuple[Sequence[float], Sequence[float]],
    denominator: tuple[Sequence[float], Sequence[float]],
    confidence: float = CONFIDENCE,
    n_bootstrap: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float]:
    """``(estimate, low, high)`` of the quotient of two paired speed-ups of ONE run that share
    their baseline callable (e.g. a backend's speed-up over ``F.linear`` divided by the best
    dense backend's: the backend's speed-up over that backend).

    Each speed-up is given as its ``(baseline_s, candidate_s)`` blocks; the two sets of pairs
    were measured apart, so each is resampled on its own (two-sample percentile bootstrap of
    the difference of the mean log ratios, small-sample corrected as :func:`ratio_interval`).
    """
    if not 0.0 < confidence < 1.0:
        raise TimingError(f"confidence={confidence!r} is invalid; allowed: 0 < confidence < 1")
    rng = np.random.default_rng(seed)
    draws = []
    means = []
    for base, cand in (numerator, denominator):
        logs = _log_ratios(base, cand)
        n, mean = len(logs), float(logs.mean())
        boot = logs[rng.integers(0, n, size=(int(n_bootstrap), n))].mean(axis=1)
        draws.append(mean + (boot - mean) * math.sqrt(n / (n - 1)))
        means.append(mean)
    diff = draws[0] - draws[1]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(diff, [alpha, 1.0 - alpha])
    return math.exp(means[0] - means[1]), math.exp(float(low)), math.exp(float(high))


@dataclass(frozen=True)
class PairedRatio:
    """A paired measurement of ``candidate`` against ``baseline``.

    ``speedup`` = baseline time / candidate time (> 1: the candidate is faster), with its
    interval ``[ci_low, ci_high]`` at ``confidence``; ``candidate_s`` / ``baseline_s`` are the
    per-call seconds of each block (pair ``i`` = element ``i`` of both), ``calls`` the calls per
    block of each side.
    """

    speedup: float
    ci_low: float
    ci_high: float
    candidate_s: list[float] = field(repr=False)
    baseline_s: list[float] = field(repr=False)
    calls: tuple[int, int] = (1, 1)
    confidence: float = CONFIDENCE

    @property
    def n_pairs(self) -> int:
        """Number of block pairs the ratio was estimated from."""
        return len(self.candidate_s)

    def fields(self) -> dict[str, Any]:
        """The record fields: ``speedup``, ``speedup_ci_low``, ``speedup_ci_high``, ``n_pairs``."""
        return {
            "speedup": self.speedup,
            "speedup_ci_low": self.ci_low,
            "speedup_ci_high": self.ci_high,
            "n_pairs": self.n_pairs,
        }


def _check_pairs(pairs: int, block_seconds: float) -> None:
    if not isinstance(pairs, int) or isinstance(pairs, bool) or pairs < MIN_PAIRS:
        raise TimingError(f"pairs={pairs!r} is invalid; allowed: an integer >= {MIN_PAIRS}")
    if not isinstance(block_seconds, (int, float)) or not block_seconds > 0:
        raise TimingError(f"block_seconds={block_seconds!r} is invalid; allowed: > 0 seconds")


def paired_ratios(
    baseline: Callable[[], object],
    candidates: Mapping[K, Callable[[], object]],
    *,
    pairs: int = 20,
    block_seconds: float = 0.01,
    threads: int | None = None,
    inference: bool = True,
    block: BlockTimer = mean_block,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[K, PairedRatio]:
    """Time ``baseline`` and every candidate in interleaved rounds; one :class:`PairedRatio` per
    candidate against the baseline blocks of the same rounds.

    Args:
        baseline: the reference callable (e.g. dense ``F.linear``).
        candidates: ``{key: callable}``; each round runs baseline then candidates, the order
            reversed every other round (one candidate: ABBA).
        pairs: rounds (>= 2). block_seconds: about how long one block of one callable runs.
        threads: torch intra-op threads while timing (None: as set); restored afterwards.
        inference: run under ``torch.inference_mode()`` (False: the caller's grad mode).
        block: the block timer (see the module docstring). seed: bootstrap seed.

    Raises:
        TimingError: ``pairs`` < 2, ``block_seconds`` <= 0, ``threads`` < 1 (before any call).
    """
    _check_pairs(pairs, block_seconds)
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise TimingError(f"threads={threads!r} is invalid; allowed: an integer >= 1 or None")
    if "\0baseline" in candidates:
        raise TimingError("a candidate key may not be '\\0baseline' (reserved)")
    fns: dict[Any, Callable[[], object]] = {"\0baseline": baseline, **candidates}
    before = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        with torch.inference_mode(inference):
            sizing = min(block_seconds / 2, SIZING_SECONDS)
            calls = {
                key: calls_per_block(fn, block_seconds, sizing_seconds=sizing)
                for key, fn in fns.items()
            }
            samples = interleaved_blocks(fns, pairs, calls, block)
    finally:
        torch.set_num_threads(before)
    base = samples.pop("\0baseline")
    out = {}
    for key, cand in samples.items():
        est, low, high = ratio_interval(base, cand, confidence, seed=seed)
        out[key] = PairedRatio(
            est, low, high, cand, base, (calls[key], calls["\0baseline"]), confidence
        )
    return out


def paired_ratio(
    candidate: Callable[[], object], baseline: Callable[[], object], **options: Any
) -> PairedRatio:
    """Speed-up of ``candidate`` over ``baseline`` (baseline time / candidate time), ABBA.

    The two alternate in blocks of about ``block_seconds`` over ``pairs`` rounds in this
    process; the ratio and its interval come from the pairs (:func:`ratio_interval`). Arguments
    as :func:`paired_ratios`; e.g. ``paired_ratio(lambda: layer(x), lambda: F.linear(x, w),
    pairs=20, block_seconds=0.01, threads=2).speedup``.
    """
    return paired_ratios(baseline, {"candidate": candidate}, **options)["candidate"]


#: an A/A interval (a callable against an identical copy of itself) wider than this either side
#: of 1.0 marks the run noisy
AA_TOLERANCE = 0.10
NO_DIFFERENCE = "no measurable difference"


#: a host that gives a run less than this share of its threads' cores (core_scaling) has
#: withheld one: a speed run is then noisy, a tuning provisional
CORE_SHARE_MIN = 0.8


def gave_cores(scaling: float | None, threads: int) -> bool:
    """Whether a :func:`core_scaling` value shows the host giving ``threads`` cores (at least
    :data:`CORE_SHARE_MIN` of them); False for None (not measured)."""
    return scaling is not None and scaling >= CORE_SHARE_MIN * threads


def core_scaling(threads: int, blocks: int = 7, block_seconds: float = 0.01) -> float | None:
    """How many cores the host gives this process now: the time of a compute-bound float32
    matmul ([256, 256] @ [256, 256], in cache) on one thread over its time on ``threads``
    threads, fastest of ``blocks`` interleaved blocks of about ``block_seconds`` each (about
    0.15 s in all). Near ``threads`` when every core is this process's; lower when another
    process or the hypervisor holds one (a VM's second vCPU shared with a neighbour: 2-thread
    kernels then run at 1-thread speed while 1-thread ones do not change, and speed-ups of
    parallel kernels over memory-bound dense ones shrink). torch's thread count is restored.
    None for ``threads`` < 2.
    """
    if threads < 2:
        return None
    a = torch.randn(256, 256)
    b = torch.randn(256, 256)
    before = torch.get_num_threads()

    def products(n: int, calls: int) -> None:
        torch.set_num_threads(n)
        torch.mm(a, b)  # wakes the team
        for _ in range(calls):
            torch.mm(a, b)

    try:
        calls = max(1, int(block_seconds / max(mean_block(lambda: products(1, 0), 1), 1e-6)))
        fns = {n: (lambda n=n: products(n, calls)) for n in (1, threads)}
        samples = interleaved_blocks(fns, blocks, {n: 1 for n in fns})
    finally:
        torch.set_num_threads(before)
    best = {n: min(times) for n, times in samples.items()}
    return round(best[1] / best[threads], 2)


def aa_noise(low: float, high: float, tolerance: float = AA_TOLERANCE) -> str | None:
    """Why an A/A interval ``[low, high]`` marks its run noisy, or None when it does not: the
    interval misses 1.0, or reaches beyond ``1 +- tolerance``."""
    if not low <= 1.0 <= high:
        return f"A/A interval [{low:.3f}, {high:.3f}] misses 1.0"
    if low < 1.0 - tolerance or high > 1.0 + tolerance:
        return f"A/A interval [{low:.3f}, {high:.3f}] is wider than +-{tolerance:.0%}"
    return None


def verdict(low: float | None, high: float | None) -> str:
    """How to read a speed-up interval: ``faster``, ``slower``, :data:`NO_DIFFERENCE` (it
    holds 1.0) or ``no interval`` (an old record without one)."""
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return "no interval"
    if low > 1.0:
        return "faster"
    if high < 1.0:
        return "slower"
    return NO_DIFFERENCE
