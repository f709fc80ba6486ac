"""Benchmarks: ``python -m suite.bench`` (Hydra app in :mod:`suite.bench.app`).

Modules: ``app`` (entry point, layer grid, records), ``timing`` (the one timer, built on
``torch.utils.benchmark``), ``masks`` (masks of benchmarked layers and models), ``whole_model``
(condensed whole models vs dense), ``checkpoint`` (a trained checkpoint -> model + masks).
The public names of ``app`` are re-exported lazily.
"""

from __future__ import annotations

from suite import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    "suite.bench.app",
    (
        "BenchConfigError",
        "BenchSettings",
        "main",
        "resolve_settings",
        "run_bench",
        "usable_backends",
        "bench_layer",
    ),
)
