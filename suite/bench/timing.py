"""Timing and correctness primitives of the benchmark runner.

- Threads are set with :func:`suite.runtime.set_threads` (torch and numba together); the timers
  set torch's intra-op threads to ``threads`` while they time and restore them afterwards.
- :func:`measure` / :func:`measure_interleaved` time callables with the project's one timer
  (:mod:`backends.timing`) and return median + IQR + minimum; speed-ups come from
  :func:`backends.timing.paired_ratio` (paired blocks, an interval). Both run the callables
  under ``torch.inference_mode()`` (what serving code uses; ``inference=False`` times them in
  the caller's grad mode).
- :func:`check_linear` checks a layer's output against ``F.linear`` in float64 before timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from backends.timing import calls_per_block, interleaved_blocks

__all__ = [
    "BenchMismatchError",
    "Timing",
    "check_linear",
    "check_close",
    "measure",
    "measure_interleaved",
]

# |y - ref| <= TOLERANCE_C * eps(dtype) * (|W| @ |x| + |b|) elementwise (issue 3's bound).
TOLERANCE_C = 16.0


class BenchMismatchError(AssertionError):
    """A backend's output differs from the dense reference: the benchmark refuses to time it."""


@dataclass(frozen=True)
class Timing:
    """One measurement: median, interquartile range and minimum of the per-call time (s).

    On a shared, loaded machine the minimum is the least disturbed estimate; the median is
    what the report uses.
    """

    median_s: float
    iqr_s: float
    runs: int
    min_s: float = float("nan")


def _timing(times: list[float]) -> Timing:
    q1, med, q3 = np.percentile(np.asarray(times), [25, 50, 75])
    return Timing(float(med), float(q3 - q1), len(times), float(min(times)))


def measure(
    fn: Callable[[], object],
    threads: int,
    min_run_time: float,
    inference: bool = True,
    blocks: int = 10,
) -> Timing:
    """Time ``fn()`` alone with the one timer: ``blocks`` blocks of about
    ``min_run_time / blocks`` seconds on ``threads`` threads, under ``torch.inference_mode()``
    unless ``inference=False``. For a speed-up use :func:`backends.timing.paired_ratio`.

    Returns:
        :class:`Timing` with the median, IQR and minimum of the per-call time (seconds) over
        the blocks.
    """
    return measure_interleaved({"fn": fn}, threads, min_run_time, blocks, inference)["fn"]


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    threads: int,
    min_run_time: float,
    rounds: int = 3,
    inference: bool = True,
) -> dict[str, Timing]:
    """Time several callables in alternation so that they share the machine's conditions,
    through the one timer (:func:`backends.timing.interleaved_blocks`).

    ``rounds`` rounds of one block of about ``min_run_time / rounds`` seconds per callable, the
    order reversed every other round. Speed-ups come from :func:`backends.timing.paired_ratio`
    (an interval from the pairs); this gives each callable's own times. The callables run
    under ``torch.inference_mode()`` unless ``inference=False``.

    Returns:
        ``{name: Timing}`` with the median, IQR and minimum over the blocks' per-call times.
    """
    if rounds < 1:
        raise ValueError(f"rounds={rounds!r} is invalid; allowed: an integer >= 1")
    if not min_run_time > 0:
        raise ValueError(f"min_run_time={min_run_time!r} is invalid; allowed: > 0 seconds")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(int(threads))
        with torch.inference_mode(inference):
            calls = {k: calls_per_block(fn, min_run_time / rounds) for k, fn in fns.items()}
            samples = interleaved_blocks(fns, rounds, calls)
    finally:
        torch.set_num_threads(before)
    return {name: _timing(times) for name, times in samples.items()}


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def check_linear(
    got: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    what: str,
) -> None:
    """Check ``got`` against ``F.linear(x, weight, bias)`` computed in float64.

    Args:
        got: [..., out], the backend's output.
        x: [..., in]; weight: [out, in] (already masked); bias: [out] or None.
        what: names the backend and case in the error.

    Raises:
        BenchMismatchError: shape differs, a value is not finite, or
            ``|got - ref| > c * eps(x.dtype) * (|W| @ |x| + |b|) + tiny`` somewhere.
    """
    ref = torch.nn.functional.linear(
        x.double(), weight.double(), bias.double() if bias is not None else None
    )
    if tuple(got.shape) != tuple(ref.shape):
        raise BenchMismatchError(
            f"{what}: output shape {tuple(got.shape)}, expected {tuple(ref.shape)}"
        )
    scale = torch.nn.functional.linear(
        x.double().abs(), weight.double().abs(), bias.double().abs() if bias is not None else None
    )
    err = (got.double() - ref).abs()
    bound = TOLERANCE_C * _eps(x.dtype) * scale + 1e-30
    bad = ~(err <= bound)
    if bool(bad.any()):
        idx = int(bad.flatten().nonzero()[0])
        raise BenchMismatchError(
            f"{what}: output differs from F.linear at {int(bad.sum())} of {bad.numel()} "
            f"positions; max |error| {float(err.max()):.3g}, first bad position {idx}: got "
            f"{float(got.flatten()[idx]):.6g}, expected {float(ref.flatten()[idx]):.6g} "
            f"(bound {float(bound.flatten()[idx]):.3g})"
        )


def check_close(got: torch.Tensor, want: torch.Tensor, what: str, rtol: float = 1e-3) -> None:
    """Check a whole model's output ``got`` against ``want`` (same shape) relative to its scale.

    Raises:
        BenchMismatchError: ``max |got - want| > rtol * max(1, max |want|)`` or shapes differ.
    """
    if tuple(got.shape) != tuple(want.shape):
        raise BenchMismatchError(
            f"{what}: output shape {tuple(got.shape)}, expected {tuple(want.shape)}"
        )
    err = float((got.double() - want.double()).abs().max()) if got.numel() else 0.0
    tol = rtol * max(1.0, float(want.double().abs().max()) if want.numel() else 0.0)
    if not err <= tol:
        raise BenchMismatchError(
            f"{what}: output differs from the masked dense model: max |error| {err:.3g} > {tol:.3g}"
        )
