"""Whole-model inference timing: a condensed model vs the same model masked-dense.

For each backend the model is condensed with ``srigl.condense`` (Linear layers only; attention's
in_proj and out_proj and all convolutions stay masked-dense), its output is checked against
the masked dense model on the same input, then both are timed per batch size. Each result is
one dict of ``metrics.whole_model`` in the bench record::

    {model, backend, structured, batch, sparsity, dtype, threads, device, median_s, iqr_s,
     dense_median_s, dense_iqr_s, min_s, dense_min_s, condensed_layers,
     condensed_weight_fraction, input_shape}

``condensed_weight_fraction`` is the share of the model's weights (parameters with dim >= 2)
that sit in condensed layers: the most a condensed backend can speed up.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

import backends
import srigl
from srigl.condense import condensable_linears
from suite.bench.timing import check_close, measure_interleaved

__all__ = ["bench_whole_model", "masked_dense"]


def masked_dense(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in eval mode with every masked parameter multiplied by its mask."""
    ref = copy.deepcopy(model).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    return ref


def _weight_fraction(model: nn.Module, layer_names: Sequence[str]) -> float:
    total = sum(p.numel() for p in model.parameters() if p.dim() >= 2)
    inside = sum(model.get_submodule(n).weight.numel() for n in layer_names)
    return inside / total if total else 0.0


def bench_whole_model(
    name: str,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    batches: Sequence[int],
    backend_names: Sequence[str],
    *,
    structured: bool,
    sparsity: float,
    threads: int,
    min_run_time: float,
    device: torch.device,
    dtype: torch.dtype,
    seed: int = 0,
    rounds: int = 2,
    skipped: dict[str, str] | None = None,
    tick: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time ``model`` condensed with each backend against its masked dense form.

    Args:
        name: model label stored in each result.
        model: the model (weights in ``dtype`` on ``device`` are made from a copy).
        masks: {parameter name: bool mask}.
        input_shape: one sample's shape; inputs are standard normal [batch, *input_shape].
        batches: batch sizes.
        backend_names: backends to condense with (available ones; others go to ``skipped``).
        rounds: alternations of the condensed and the dense model per timing (see
            :func:`suite.bench.timing.measure_interleaved`).
        skipped: dict collecting ``"<model>/<backend>": reason`` for what could not run.
        tick: called after each measurement (progress bar).

    Returns:
        One result dict per (backend, batch) (see the module docstring).

    Raises:
        BenchMismatchError: a condensed model's output differs from the masked dense model's.
    """
    skipped = skipped if skipped is not None else {}
    dense = masked_dense(model, masks).to(device=device, dtype=dtype)
    dev_masks = {k: v.to(device) for k, v in masks.items()}
    layer_names = condensable_linears(dense, dev_masks)
    fraction = _weight_fraction(dense, layer_names)
    smalls: dict[str, nn.Module] = {}
    for backend in backend_names:
        try:
            smalls[backend] = srigl.condense(
                dense, dev_masks, backend=backend, structured=structured
            ).eval()
        except (ValueError, backends.BackendUnavailableError) as exc:
            skipped[f"{name}/{backend}"] = f"{type(exc).__name__}: {exc}"
    gen = torch.Generator().manual_seed(int(seed))
    results = []
    with torch.no_grad():
        for batch in batches:
            x = torch.randn((int(batch), *input_shape), generator=gen).to(device, dtype)
            want = dense(x)
            for backend, small in smalls.items():
                check_close(small(x), want, f"{name} condensed with {backend!r}, batch {batch}")
                pair = measure_interleaved(
                    {"sparse": partial(small, x), "dense": partial(dense, x)},
                    threads,
                    min_run_time,
                    rounds,
                )
                t, base = pair["sparse"], pair["dense"]
                results.append(
                    {
                        "model": name,
                        "backend": backend,
                        "structured": bool(structured),
                        "batch": int(batch),
                        "sparsity": float(sparsity),
                        "dtype": str(dtype).removeprefix("torch."),
                        "threads": int(threads),
                        "device": device.type,
                        "median_s": t.median_s,
                        "iqr_s": t.iqr_s,
                        "dense_median_s": base.median_s,
                        "dense_iqr_s": base.iqr_s,
                        "min_s": t.min_s,
                        "dense_min_s": base.min_s,
                        "condensed_layers": len(layer_names),
                        "condensed_weight_fraction": fraction,
                        "input_shape": [int(s) for s in input_shape],
                    }
                )
                if tick:
                    tick(f"{name} {backend} b={batch}")
    return results
