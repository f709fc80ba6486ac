"""The one timer runs what it times under torch.inference_mode() (what serving code uses)."""

from __future__ import annotations

import torch

from suite.bench.timing import measure, measure_interleaved


def test_measure_and_measure_interleaved_time_under_inference_mode():
    seen: list[bool] = []

    def fn():
        seen.append(torch.is_inference_mode_enabled())

    measure(fn, threads=1, min_run_time=0.001)
    measure_interleaved({"a": fn, "b": fn}, threads=1, min_run_time=0.002, rounds=2)
    assert seen and all(seen)
    seen.clear()
    measure(fn, threads=1, min_run_time=0.001, inference=False)
    assert seen and not any(seen)
    assert not torch.is_inference_mode_enabled()  # the caller's mode is left as it was
