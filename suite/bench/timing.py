"""Timing and correctness primitives of the benchmark runner.

- Threads are set with :func:`suite.runtime.set_threads` (torch and numba together:
  ``torch.utils.benchmark.Timer`` runs with ONE thread unless told otherwise).
- :func:`measure` times a callable with ``Timer.blocked_autorange`` and returns median + IQR.
  Both timers run the callable under ``torch.inference_mode()`` (what serving code uses;
  ``inference=False`` times it in the caller's grad mode).
- :func:`check_linear` checks a layer's output against ``F.linear`` in float64 before timing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from backends.kernels.build import import_cpp_extension

import_cpp_extension()  # torch.utils.benchmark imports it: without its CUDA_HOME warning
from torch.utils import benchmark  # noqa: E402

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


def measure(
    fn: Callable[[], object], threads: int, min_run_time: float, inference: bool = True
) -> Timing:
    """Time ``fn()`` with ``Timer(num_threads=threads).blocked_autorange(min_run_time)``,
    under ``torch.inference_mode()`` unless ``inference=False``.

    Returns:
        :class:`Timing` with the median and IQR of the per-call time (seconds) over the blocks.
    """
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=int(threads))
    with torch.inference_mode(inference):
        m = timer.blocked_autorange(min_run_time=float(min_run_time))
    return Timing(float(m.median), float(m.iqr), len(m.times), float(min(m.times)))


def measure_interleaved(
    fns: dict[str, Callable[[], object]],
    threads: int,
    min_run_time: float,
    rounds: int = 3,
    inference: bool = True,
) -> dict[str, Timing]:
    """Time several callables in alternation so that they share the machine's conditions.

    Each of ``rounds`` rounds runs ``blocked_autorange(min_run_time / rounds)`` for every
    callable in turn (the order alternates between rounds); the per-call times of all blocks
    of a callable are pooled. On a busy machine a ratio of two such timings is far more stable
    than the ratio of two measurements taken at different moments. The callables run under
    ``torch.inference_mode()`` unless ``inference=False``.

    Returns:
        ``{name: Timing}`` with the median and IQR over the pooled per-call times (seconds).
    """
    import numpy as np

    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    pooled: dict[str, list[float]] = {name: [] for name in fns}
    order = list(fns)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            timer = benchmark.Timer(stmt="fn()", globals={"fn": fns[name]}, num_threads=threads)
            with torch.inference_mode(inference):
                pooled[name] += timer.blocked_autorange(min_run_time=min_run_time / rounds).times
    out = {}
    for name, times in pooled.items():
        q1, med, q3 = np.percentile(np.asarray(times), [25, 50, 75])
        out[name] = Timing(float(med), float(q3 - q1), len(times), float(min(times)))
    return out


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
