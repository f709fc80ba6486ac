"""N:M vs constant fan-in at the same sparsity, timed in the same cases (issue 21, speed side).

For a layer and a pattern N:M (``nm_patterns`` of the bench config), two masks of the same
weight at sparsity 1 - N/M: an N:M mask (:func:`backends.nm.nm_mask`: N kept weights in every
group of M consecutive inputs) and a constant fan-in mask with the same k = in * N / M kept
weights per neuron at random positions. Per batch, both layers run on the same input with every
backend, each paired against dense ``F.linear`` with the one protocol, beside one A/A control
(the case's ``dense_aa`` row); the order of the two alternates from batch to batch.

Row fields, besides those of :mod:`suite.bench.layers`:

- every row of the comparison: ``nm_pair`` (``"N:M"``: the pattern compared) and ``pattern``
  (``"N:M"`` for the N:M layer, ``"fan_in"`` for its constant fan-in partner; the A/A row
  ``"N:M"``), ``sparsity`` = 1 - N/M;
- N:M rows: ``speedup_vs_fan_in`` (the N:M layer's speed-up over dense / the constant fan-in
  layer's, same backend, mode and batch) with ``speedup_vs_fan_in_ci_low`` / ``_ci_high``
  (:func:`backends.timing.quotient_interval` over the two rows' paired samples), and
  ``fan_in_speedup`` / ``fan_in_speedup_ci_low`` / ``_ci_high`` (the partner's own speed-up).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from backends.nm import nm_mask
from srigl.masks import random_fan_in_mask
from suite.bench.layers import AA_BACKEND, FAN_IN, case_rows, layer_setup, quotient_fields
from suite.bench.settings import BenchRun

__all__ = ["nm_label", "nm_rows", "pair_with_fan_in"]


def nm_label(n: int, m: int) -> str:
    """The ``pattern`` of an N:M row: ``"N:M"``."""
    return f"{n}:{m}"


def pair_with_fan_in(
    nm_case: Sequence[dict[str, Any]], fan_in_case: Sequence[Mapping[str, Any]]
) -> None:
    """Give every N:M row of one case (not the A/A row) ``speedup_vs_fan_in`` and the partner's
    ``fan_in_speedup``, each with its interval, from the constant fan-in row of the same backend
    and mode (None where that backend did not take the fan-in layer)."""
    partners = {(r["backend"], r["mode"]): r for r in fan_in_case if r["backend"] != AA_BACKEND}
    for row in nm_case:
        if row["backend"] == AA_BACKEND:
            continue
        other = partners.get((row["backend"], row["mode"]))
        row.update(quotient_fields(row, other, "speedup_vs_fan_in"))
        for key in ("speedup", "speedup_ci_low", "speedup_ci_high"):
            row[f"fan_in_{key}"] = other[key] if other else None


def nm_rows(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pattern: tuple[int, int],
    run: BenchRun,
    generator: torch.Generator,
) -> list[dict[str, Any]]:
    """The rows of one layer and one N:M pattern against constant fan-in (module docstring).

    Args:
        weight: [out, in] on the bench device in the bench dtype, in divisible by M;
            bias: [out] or None.
        pattern: ``(N, M)``, 1 <= N < M (checked by the settings).
        run: the bench run (settings, usable backends, ``skipped``, progress tick).
        generator: CPU generator of both masks (the inputs are drawn as in bench_layer).

    Returns:
        Per batch: the A/A row, then the N:M and constant fan-in rows of every backend and mode.
    """
    settings = run.settings
    n, m = pattern
    out_f, in_f = (int(d) for d in weight.shape)
    name = nm_label(n, m)
    sparsity = 1.0 - n / m
    masks = {
        name: nm_mask((out_f, in_f), n, m, generator),
        FAN_IN: random_fan_in_mask((out_f, in_f), in_f * n // m, generator),
    }
    setups = {
        kind: layer_setup(
            weight,
            mask.to(settings.device),
            bias,
            run.names,
            settings,
            layer_name=f"{in_f}->{out_f} {kind}" + ("" if kind == name else f" ({name})"),
            extra={"sparsity": sparsity, "pattern": kind, "nm_pair": name},
            skipped=run.skipped,
        )
        for kind, mask in masks.items()
    }
    inputs = torch.Generator().manual_seed(settings.seed)
    rows: list[dict[str, Any]] = []
    for i, batch in enumerate(settings.batches):
        x = torch.randn(batch, in_f, generator=inputs).to(settings.device, settings.dtype)
        order = [name, FAN_IN] if i % 2 == 0 else [FAN_IN, name]
        case = {
            kind: case_rows(setups[kind], settings, x, aa=kind == name, tick=run.tick)
            for kind in order
        }
        pair_with_fan_in(case[name], case[FAN_IN])
        rows += case[name] + case[FAN_IN]
    return rows
