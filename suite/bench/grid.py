"""The synthetic layer grid of a bench run: per shape, random weights with constant fan-in
masks at every sparsity (:func:`suite.bench.layers.bench_layer`), then the N:M comparison of the
run's ``nm_patterns`` (:func:`suite.bench.nm.nm_rows`)."""

from __future__ import annotations

import math
from typing import Any

import torch

from srigl.masks import constant_fan_in_mask
from suite.bench.layers import FAN_IN, bench_layer
from suite.bench.nm import nm_rows
from suite.bench.settings import BenchRun

__all__ = ["layer_grid"]


def layer_grid(run: BenchRun) -> list[dict[str, Any]]:
    """The synthetic grid: random weights with constant fan-in masks per shape x sparsity
    (rows with ``pattern: "fan_in"``), then per shape the N:M comparison of
    ``settings.nm_patterns`` (:func:`suite.bench.nm.nm_rows`)."""
    settings = run.settings
    gen = torch.Generator().manual_seed(settings.seed)
    rows = []
    for in_f, out_f in settings.shapes:
        w = (torch.randn(out_f, in_f, generator=gen) / math.sqrt(in_f)).to(
            settings.device, settings.dtype
        )
        b = (torch.randn(out_f, generator=gen) * 0.1).to(settings.device, settings.dtype)
        for sp in settings.sparsities:
            mask = constant_fan_in_mask((out_f, in_f), sp, gen, settings.ablate)
            rows += bench_layer(
                w,
                mask.to(settings.device),
                b,
                settings,
                run.names,
                # nominal sparsity; the mask's is 1 - k/in, within 1/in of it
                extra={"sparsity": sp, "pattern": FAN_IN},
                skipped=run.skipped,
                tick=run.tick,
            )
        for n, m in settings.nm_patterns:
            rows += nm_rows(w, b, (n, m), run, gen)
    return rows
