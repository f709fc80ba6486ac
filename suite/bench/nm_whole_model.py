"""Whole-model N:M vs constant fan-in at the same sparsity (issue 21 item 3, speed side).

For a model and a pattern N:M, two mask sets of the same weights at sparsity 1 - N/M, uniform:
every Linear and Conv2d weight whose fan-in (in x kh x kw) is a multiple of M gets an N:M mask
(:func:`backends.nm.nm_mask`) in one set and a constant fan-in mask with the same k = fan-in *
N / M at random positions (:func:`srigl.masks.random_fan_in_mask`) in the other; other weights
stay dense in both (e.g. a first conv of 3 x 7 x 7 inputs). The model is condensed with each
set (``srigl.condense``, per backend); per batch the two condensed models run on the same input
in ABBA rounds (:func:`backends.timing.paired_ratios`, the constant fan-in model the baseline),
so the speed-up of N:M over constant fan-in and its 95% bootstrap interval come from paired
blocks. Per model, pattern and batch the A/A control (the constant fan-in model of the first
backend against an identical copy of itself) is a row with ``backend: "dense_aa"``.

Each row of ``metrics.nm_whole_model``::

    {model, experiment, backend, batch, pattern, nm_pair, sparsity, nm_layers, dtype, threads,
     device, input_shape, speedup_vs_fan_in, speedup_vs_fan_in_ci_low,
     speedup_vs_fan_in_ci_high, ...paired fields (speedup = speedup_vs_fan_in; the ``dense_*``
     times are the constant fan-in model's)}

Options: ``nm_whole_model_options`` of the bench config (``experiments``, ``patterns``,
``batches``, ``backends``, ``pairs``, ``min_run_time``); on with ``nm_whole_model=true``.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import torch
from torch import nn

import backends
import srigl
from backends.nm import nm_mask
from backends.timing import paired_ratios
from srigl.masks import random_fan_in_mask
from suite.bench.layers import AA_BACKEND, paired_fields
from suite.bench.nm import nm_label
from suite.bench.settings import BenchRun, parse_nm_pattern, usable_backends
from suite.bench.timing import check_close
from suite.bench.whole_model import experiment_model, masked_dense

log = logging.getLogger(__name__)

__all__ = ["bench_nm_whole_model", "nm_model_masks", "run_nm_whole_models"]

DEFAULT_EXPERIMENTS = ("digits_mlp", "digits_cnn", "imagenet_vit_b16", "imagenet_resnet50")
DEFAULT_PATTERNS = ("2:4", "1:4", "1:8")


def nm_model_masks(
    model: nn.Module, pattern: tuple[int, int], generator: torch.Generator
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(nm_masks, fan_in_masks)``: {``<module>.weight``: bool mask of the weight's shape, CPU}
    for every Linear and Conv2d weight of ``model`` whose fan-in is a multiple of M (the same
    keys in both; at least M inputs): N:M, and constant fan-in with k = fan-in * N / M."""
    n, m = pattern
    nm, fan_in = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        shape = tuple(module.weight.shape)
        width = math.prod(shape[1:])
        if width % m or width < m:
            continue
        nm[f"{name}.weight"] = nm_mask(shape, n, m, generator)
        fan_in[f"{name}.weight"] = random_fan_in_mask(shape, width * n // m, generator)
    return nm, fan_in


def _condensed_pair(
    model: nn.Module,
    masks: Mapping[str, Mapping[str, torch.Tensor]],
    backend: str,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, nn.Module] | str:
    """{"nm", "fan_in"}: ``model`` masked and condensed with ``backend`` per mask set (eval
    mode, bench device and dtype), or why that backend could not condense it."""
    out = {}
    for kind, kind_masks in masks.items():
        dense = masked_dense(model, kind_masks).to(device=device, dtype=dtype)
        dev = {k: v.to(device) for k, v in kind_masks.items()}
        try:
            out[kind] = srigl.condense(dense, dev, backend=backend).eval()
        except (ValueError, backends.BackendUnavailableError) as exc:
            return f"{type(exc).__name__}: {exc}"
        out[f"{kind}_dense"] = dense.eval()
    return out


def bench_nm_whole_model(
    name: str,
    model: nn.Module,
    input_shape: Sequence[int],
    pattern: tuple[int, int],
    batches: Sequence[int],
    backend_names: Sequence[str],
    timing: Mapping[str, Any],
    *,
    device: torch.device,
    dtype: torch.dtype,
    experiment: str | None = None,
    skipped: dict[str, str] | None = None,
    tick: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """The rows of one model and one N:M pattern against constant fan-in (module docstring).

    Args:
        name: model label. model: the dense model (copied; weights in ``dtype`` on ``device``).
        input_shape: one sample's shape; inputs are standard normal [batch, *input_shape].
        pattern: ``(N, M)``, 1 <= N < M. batches: batch sizes.
        backend_names: backends to condense with (failures go to ``skipped``).
        timing: keyword arguments of :func:`backends.timing.paired_ratios` (pairs,
            block_seconds, threads, seed).

    Raises:
        BenchMismatchError: a condensed model's output differs from its masked dense model's.
    """
    skipped = skipped if skipped is not None else {}
    label = nm_label(*pattern)
    gen = torch.Generator().manual_seed(int(timing.get("seed", 0)))
    nm, fan_in = nm_model_masks(model, pattern, gen)
    fixed = {
        "model": name,
        "experiment": experiment or name,
        "pattern": label,
        "nm_pair": label,
        "sparsity": 1.0 - pattern[0] / pattern[1],
        "nm_layers": len(nm),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": int(timing.get("threads") or torch.get_num_threads()),
        "device": device.type,
        "input_shape": [int(s) for s in input_shape],
    }
    pairs = {}
    for backend in backend_names:
        got = _condensed_pair(model, {"nm": nm, "fan_in": fan_in}, backend, device, dtype)
        if isinstance(got, str):
            skipped[f"{name}/{label}/{backend}"] = got
        else:
            pairs[backend] = got
    inputs = torch.Generator().manual_seed(int(timing.get("seed", 0)))
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in batches:
            x = torch.randn((int(batch), *input_shape), generator=inputs).to(device, dtype)
            for i, (backend, got) in enumerate(pairs.items()):
                for kind in ("nm", "fan_in"):
                    what = f"{name} {label} {kind} condensed with {backend!r}, batch {batch}"
                    check_close(got[kind](x), got[f"{kind}_dense"](x), what)
                fns = {"nm": partial(got["nm"], x)}
                if i == 0:  # the A/A control: the baseline against a copy of itself
                    fns["aa"] = partial(copy.deepcopy(got["fan_in"]), x)
                ratios = paired_ratios(partial(got["fan_in"], x), fns, **timing)
                row = {**fixed, "batch": int(batch)}
                if "aa" in ratios:
                    rows.append({**row, "backend": AA_BACKEND, **paired_fields(ratios["aa"])})
                rows.append({**row, "backend": backend, **_vs_fan_in(ratios["nm"])})
                if tick:
                    tick(f"{name} {label} {backend} b={batch}")
    return rows


def _vs_fan_in(ratio: Any) -> dict[str, Any]:
    """The paired fields of the N:M model against the constant fan-in model, with the speed-up
    also under ``speedup_vs_fan_in`` (and its interval)."""
    fields = paired_fields(ratio)
    return {
        **fields,
        "speedup_vs_fan_in": fields["speedup"],
        "speedup_vs_fan_in_ci_low": fields["speedup_ci_low"],
        "speedup_vs_fan_in_ci_high": fields["speedup_ci_high"],
    }


def run_nm_whole_models(cfg: Any, run: BenchRun) -> list[dict[str, Any]]:
    """N:M vs constant fan-in for the configured experiments' models (each at its input size):
    ``cfg.nm_whole_model_options`` (module docstring)."""
    settings = run.settings
    opts = cfg.get("nm_whole_model_options") or {}
    patterns = [parse_nm_pattern(str(p)) for p in opts.get("patterns") or DEFAULT_PATTERNS]
    wanted = list(opts.get("backends") or ["fused"])
    usable, not_here = usable_backends(wanted, settings.device, settings.dtype)
    for n, why in not_here.items():
        run.skipped.setdefault(f"nm_whole_model/{n}", why)
    pairs = int(opts.get("pairs") or 10)
    timing = {
        "pairs": pairs,
        "block_seconds": float(opts.get("min_run_time") or settings.min_run_time) / pairs,
        "threads": settings.threads,
        "seed": settings.seed,
    }
    batches = [int(b) for b in opts.get("batches") or (1, 32)]
    rows = []
    for experiment in opts.get("experiments") or DEFAULT_EXPERIMENTS:
        setup = experiment_model(str(experiment), 0.5, settings.seed)  # its masks are not used
        for pattern in patterns:
            rows += bench_nm_whole_model(
                setup.model_name,
                setup.model,
                setup.input_shape,
                pattern,
                batches,
                usable,
                timing,
                device=settings.device,
                dtype=settings.dtype,
                experiment=setup.experiment,
                skipped=run.skipped,
                tick=run.tick,
            )
    return rows
