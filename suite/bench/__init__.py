"""Benchmarks: ``python -m suite.bench`` (Hydra app in :mod:`suite.bench.app`).

Modules: ``app`` (entry point, layer grid, records), ``timing`` (the one timer, built on
``torch.utils.benchmark``), ``masks`` (masks of benchmarked layers and models), ``whole_model``
(condensed whole models vs dense), ``checkpoint`` (a trained checkpoint -> model + masks).
The public names of ``app`` are re-exported lazily.
"""

from __future__ import annotations

from typing import Any

_APP_NAMES = (
    "BenchConfigError",
    "BenchSettings",
    "main",
    "resolve_settings",
    "run_bench",
    "usable_backends",
    "bench_layer",
)


def __getattr__(name: str) -> Any:
    if name in _APP_NAMES:
        from suite.bench import app

        return getattr(app, name)
    raise AttributeError(f"module 'suite.bench' has no attribute {name!r}")
