"""Benchmarks: ``python -m suite.bench`` (Hydra app in :mod:`suite.bench.app`).

Modules: ``app`` (entry point, the run and its record), ``settings`` (config -> checked
settings), ``layers`` (the layer grid, paired speed-ups, the A/A control), ``whole_model``
(condensed whole models vs dense), ``timing`` (output checks; times through the project's one
timer, :mod:`backends.timing`), ``masks`` (masks of benchmarked layers and models),
``checkpoint`` (a trained checkpoint -> model + masks).
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
