"""Whole-model inference timing: condensed models vs the dense eval-mode model and the
BN-folded dense model, measured in the same run.

For each backend the model is condensed with ``srigl.condense`` (Linear and Conv2d layers,
attention blocks, eval-mode BatchNorm folded into the convolutions), its output is checked
against the masked dense model on the same input, then the condensed model, the masked dense
eval model and the BN-folded masked dense model (``srigl.condense_conv.fold_batchnorm``, with
max-pooling in the channels-last layout as ``condense`` runs it: ``srigl.pooling``) are
timed in ABBA rounds per batch size (:func:`backends.timing.paired_ratios`: the speed-ups come
from the paired blocks, with 95% bootstrap intervals). Per model and batch the A/A control (the
dense eval model against an identical copy of itself) is a result with ``backend: "dense_aa"``.
Each result is one dict of
``metrics.whole_model``::

    {model, experiment, backend, structured, batch, sparsity, dtype, threads, device,
     speedup, speedup_ci_low, speedup_ci_high, n_pairs, verdict,       # vs the dense eval model
     speedup_vs_folded, speedup_vs_folded_ci_low, speedup_vs_folded_ci_high,
     samples_s, dense_samples_s, folded_samples_s, calls_per_block,    # per-block seconds
     median_s, iqr_s, min_s, dense_median_s, dense_iqr_s, dense_min_s, runs,
     folded_median_s, folded_iqr_s, folded_min_s, condensed_layers, kept_layers,
     condensed_weight_fraction, epilogues_fused, input_shape,
     params_dense, params_condensed, flops_dense, flops_condensed, bytes_dense, bytes_condensed}

``condensed_weight_fraction`` is the share of the model's weights (parameters with dim >= 2)
that sit in condensed layers. ``epilogues_fused`` counts the ReLUs / residual adds that
``condense`` handed to the condensed convs before them (:mod:`srigl.epilogues`); the dense and
folded baselines run them as eager torch does, as separate passes, so this is part of what the
condensed model gains (the bench condenses with ``fuse_epilogues=True``; ``condense``'s
default leaves them as the model wrote them).
``params_*``, ``flops_*`` (multiply-adds per sample of the weight layers) and ``bytes_*``
(parameter storage) come from :mod:`suite.train.cost`.

:func:`experiment_model` builds an experiment's model at its input size with the masks of the
experiment's own SRigL set-up (its trainer options: distribution, first layer, classifier,
attention), so ``python -m suite.bench whole_model=true`` covers every model/dataset pair.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

import backends
import srigl
from backends.timing import PairedRatio, TimingError, paired_ratios, ratio_interval
from srigl.condense_conv import fold_batchnorm
from srigl.pooling import channels_last_pooling
from suite.bench.layers import AA_BACKEND, paired_fields
from suite.bench.masks import model_masks
from suite.bench.settings import BenchRun, usable_backends
from suite.bench.timing import check_close

# The experiments of the paper (model/dataset pairs) the whole-model bench covers by default,
# and one sample's shape and the class count of each data set: read from the config tree.
from suite.config import DATASET_SHAPES
from suite.config import PAPER_EXPERIMENTS as EXPERIMENTS

log = logging.getLogger(__name__)

__all__ = [
    "DATASET_SHAPES",
    "EXPERIMENTS",
    "ExperimentModel",
    "bench_whole_model",
    "experiment_model",
    "masked_dense",
    "run_whole_models",
]


def masked_dense(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` in eval mode with every masked parameter multiplied by its mask."""
    ref = copy.deepcopy(model).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask.to(params[name].dtype))
    return ref


@dataclass
class ExperimentModel:
    """An experiment's model (eval mode, masked weights) and its SRigL masks."""

    experiment: str
    model_name: str
    model: nn.Module
    masks: dict[str, torch.Tensor]
    input_shape: tuple[int, ...]
    sparsity: float


def experiment_model(
    experiment: str, sparsity: float, seed: int = 0, trainer: str = "srigl"
) -> ExperimentModel:
    """Build experiment ``experiment``'s model at its input size and mask it like the
    experiment's own ``trainer`` set-up at ``sparsity`` (initial masks, seeded).

    Raises:
        ValueError: an unknown experiment or data set (names the allowed ones).
    """
    from suite.models import create_model
    from suite.train.app import compose, group_options

    try:
        cfg = compose([f"experiment={experiment}", f"trainer={trainer}"])
    except Exception as err:  # hydra's MissingConfigException names the options
        raise ValueError(f"unknown experiment {experiment!r}: {err}") from None
    dataset = str(cfg.dataset.name)
    if dataset not in DATASET_SHAPES:
        raise ValueError(
            f"experiment {experiment!r}: data set {dataset!r} has no known input shape; "
            f"allowed: {sorted(DATASET_SHAPES)}"
        )
    input_shape, num_classes = DATASET_SHAPES[dataset]
    torch.manual_seed(seed)
    model_name = str(cfg.model.name)
    model = create_model(model_name, num_classes, input_shape, **group_options(cfg.model))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    options = group_options(cfg.trainer, drop=("name", "label"))
    # The initial masks (and the sparse re-initialisation) do not depend on the schedule; a
    # run length with updates keeps the trainer from warning that none can happen. The trainer
    # is closed at once, so the model carries no hooks into the benchmark.
    with srigl.create_trainer(
        trainer, model, optimizer, sparsity=float(sparsity), total_steps=10**6, seed=seed, **options
    ) as trained:
        masks = {k: v.detach().clone() for k, v in trained.masks.items()}
    return ExperimentModel(
        experiment, model_name, model.eval(), masks, tuple(input_shape), float(sparsity)
    )


def _condensed_weights(dense: nn.Module, names: Sequence[str]) -> int:
    total = 0
    for name in names:
        total += sum(p.numel() for p in dense.get_submodule(name).parameters() if p.dim() >= 2)
    return total


def _costs(
    dense: nn.Module, masks: Mapping[str, torch.Tensor], input_shape: Sequence[int], device
) -> dict[str, int]:
    from suite.train.cost import inference_flops, model_bytes, param_counts

    params = param_counts(dense, masks)
    size = model_bytes(dense, masks)
    flops = inference_flops(dense, masks, input_shape, device=device)
    return {
        "params_dense": params["dense"],
        "params_condensed": params["condensed"],
        "flops_dense": flops["dense"],
        "flops_condensed": flops["condensed"],
        "bytes_dense": size["dense"],
        "bytes_condensed": size["condensed"],
    }


def _folded_fields(ratios: Mapping[str, PairedRatio]) -> dict[str, Any]:
    """The BN-folded model's times and the condensed model's paired speed-up over it (from the
    same rounds: folded block i / condensed block i); the dense model's where nothing folded."""
    sparse, folded = ratios["sparse"], ratios.get("folded")
    if folded is None:
        dense = paired_fields(sparse)
        est, low, high = sparse.speedup, sparse.ci_low, sparse.ci_high
        times = (dense["dense_median_s"], dense["dense_iqr_s"], dense["dense_min_s"])
    else:
        fold = paired_fields(folded)
        est, low, high = ratio_interval(folded.candidate_s, sparse.candidate_s)
        times = (fold["median_s"], fold["iqr_s"], fold["min_s"])
    return {
        "folded_median_s": times[0],
        "folded_iqr_s": times[1],
        "folded_min_s": times[2],
        "folded_samples_s": list(folded.candidate_s if folded else sparse.baseline_s),
        "speedup_vs_folded": est,
        "speedup_vs_folded_ci_low": low,
        "speedup_vs_folded_ci_high": high,
    }


@dataclass
class _Prepared:
    """A model ready to time: masked dense eval form, BN-folded form, condensed forms, costs."""

    dense: nn.Module
    folded: nn.Module
    n_rewrites: int  # BNs folded + poolings rewritten (0: the folded form is the dense one)
    smalls: dict[str, nn.Module]
    total_weights: int
    costs: dict[str, int]


def _prepare(
    name: str,
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    backend_names: Sequence[str],
    structured: bool,
    device: torch.device,
    dtype: torch.dtype,
    skipped: dict[str, str],
) -> _Prepared:
    """Condense ``model`` with every backend (failures to ``skipped``) and fold its BatchNorm."""
    dense = masked_dense(model, masks).to(device=device, dtype=dtype)
    folded = fold_batchnorm(dense).eval()
    pools = channels_last_pooling(folded)  # as condense does: the two differ by sparsity only
    dev_masks = {k: v.to(device) for k, v in masks.items()}
    smalls: dict[str, nn.Module] = {}
    for backend in backend_names:
        try:
            smalls[backend] = srigl.condense(
                dense, dev_masks, backend=backend, structured=structured, fuse_epilogues=True
            ).eval()
        except (ValueError, backends.BackendUnavailableError) as exc:
            skipped[f"{name}/{backend}"] = f"{type(exc).__name__}: {exc}"
    return _Prepared(
        dense,
        folded,
        len(folded.condense_report.folded) + len(pools),
        smalls,
        sum(p.numel() for p in dense.parameters() if p.dim() >= 2),
        _costs(dense, dev_masks, input_shape, device),
    )


def _aa_result(
    prep: _Prepared, x: torch.Tensor, fixed: Mapping[str, Any], timing: Mapping[str, Any]
) -> dict[str, Any]:
    """The A/A control of one model and batch: its dense eval model against a copy of itself."""
    twin = copy.deepcopy(prep.dense)
    ratio = paired_ratios(partial(prep.dense, x), {"aa": partial(twin, x)}, **timing)["aa"]
    return {
        **fixed,
        "backend": AA_BACKEND,
        **paired_fields(ratio),
        "condensed_layers": 0,
        "kept_layers": [],
        "condensed_weight_fraction": 0.0,
    }


def _check_timing(rounds: Any, min_run_time: Any) -> None:
    """One-line errors for the timing arguments of :func:`bench_whole_model`."""
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 2:
        raise TimingError(f"rounds={rounds!r} is invalid; allowed: an integer >= 2 (pairs)")
    if not isinstance(min_run_time, (int, float)) or not min_run_time > 0:
        raise TimingError(f"min_run_time={min_run_time!r} is invalid; allowed: > 0 seconds")


def _backend_result(
    prep: Any, small: nn.Module, ratios: Mapping[str, Any], row: Mapping[str, Any]
) -> dict[str, Any]:
    """One whole-model result: ``row`` (model, backend, batch...), the paired speed-ups vs the
    dense and the BN-folded model, and what condensing replaced (layers, weight fraction)."""
    report = small.condense_report
    fraction = (
        _condensed_weights(prep.dense, report.condensed) / prep.total_weights
        if prep.total_weights
        else 0.0
    )
    return {
        **row,
        **paired_fields(ratios["sparse"]),
        **_folded_fields(ratios),
        "condensed_layers": len(report.condensed),
        "kept_layers": sorted(report.kept),
        "condensed_weight_fraction": fraction,
        "epilogues_fused": len(report.epilogues),
    }


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
    rounds: int = 10,
    skipped: dict[str, str] | None = None,
    tick: Callable[[str], None] | None = None,
    experiment: str | None = None,
    aa: bool = True,
) -> list[dict[str, Any]]:
    """Time ``model`` condensed with each backend against its masked dense eval form and its
    BN-folded masked dense form, with the one protocol (:func:`backends.timing.paired_ratios`).

    Args:
        name: model label stored in each result.
        model: the model (weights in ``dtype`` on ``device`` are made from a copy).
        masks: {parameter name: bool mask}.
        input_shape: one sample's shape; inputs are standard normal [batch, *input_shape].
        batches: batch sizes.
        backend_names: backends to condense with (available ones; others go to ``skipped``).
        min_run_time: seconds per model of one measurement, split into ``rounds`` blocks.
        rounds: ABBA rounds (pairs, >= 2) of dense, condensed and folded model.
        skipped: dict collecting ``"<model>/<backend>": reason`` for what could not run.
        tick: called after each measurement (progress bar).
        experiment: the experiment name stored in each result (None: the model's name).
        aa: also time the dense model against an identical copy of itself per batch (the A/A
            control: a result with ``backend: "dense_aa"``).

    Returns:
        One result dict per (backend, batch), and per batch the A/A result.

    Raises:
        BenchMismatchError: a condensed model's output differs from the masked dense model's.
        TimingError: ``rounds`` < 2 or ``min_run_time`` <= 0 (before any model is built).
    """
    _check_timing(rounds, min_run_time)
    timing = {
        "pairs": rounds,
        "block_seconds": min_run_time / rounds,
        "threads": int(threads),
        "seed": int(seed),
    }
    skipped = skipped if skipped is not None else {}
    prep = _prepare(
        name, model, masks, input_shape, backend_names, structured, device, dtype, skipped
    )
    fixed = {
        "model": name,
        "experiment": experiment or name,
        "structured": bool(structured),
        "sparsity": float(sparsity),
        "dtype": str(dtype).removeprefix("torch."),
        "threads": int(threads),
        "device": device.type,
        "input_shape": [int(s) for s in input_shape],
        **prep.costs,
    }
    gen = torch.Generator().manual_seed(int(seed))
    results = []
    with torch.no_grad():
        for batch in batches:
            x = torch.randn((int(batch), *input_shape), generator=gen).to(device, dtype)
            want = prep.dense(x)
            if aa and prep.smalls:
                results.append(_aa_result(prep, x, {**fixed, "batch": int(batch)}, timing))
            for backend, small in prep.smalls.items():
                check_close(small(x), want, f"{name} condensed with {backend!r}, batch {batch}")
                fns = {"sparse": partial(small, x)}
                if prep.n_rewrites:
                    fns["folded"] = partial(prep.folded, x)
                ratios = paired_ratios(partial(prep.dense, x), fns, **timing)
                row = {**fixed, "backend": backend, "batch": int(batch)}
                results.append(_backend_result(prep, small, ratios, row))
                if tick:
                    tick(f"{name} {backend} b={batch}")
    return results


def run_whole_models(cfg: Any, run: BenchRun) -> list[dict[str, Any]]:
    """Condensed vs dense (eval and BN-folded) for the configured experiments (each model at
    its input size, masks from the experiment's SRigL set-up) and models (random init,
    SRigL-like masks on Linear layers): ``cfg.whole_model_options``."""
    from suite.models import create_model

    settings, names = run.settings, run.names
    wm = cfg.get("whole_model_options") or {}
    size = int(wm.get("image_size", 224))
    sparsities = [float(s) for s in (wm.get("sparsities") or [wm.get("sparsity", 0.9)])]
    wanted = list(wm.get("backends") or names)
    # the whole-model list stands on its own: a backend not in the layer grid's list runs too,
    # where it runs here (checked like the grid's)
    extra, not_here = usable_backends(
        [n for n in wanted if n not in names], settings.device, settings.dtype
    )
    usable = [n for n in wanted if n in names or n in extra]
    for n, why in not_here.items():
        log.warning("skipping whole-model backend %r: %s", n, why)
        run.skipped.setdefault(f"whole_model/{n}", why)
    common = {
        "structured": bool(wm.get("structured", False)),
        "threads": settings.threads,
        "min_run_time": float(wm.get("min_run_time") or settings.min_run_time),
        "device": settings.device,
        "dtype": settings.dtype,
        "seed": settings.seed,
        "rounds": int(wm.get("pairs") or wm.get("rounds") or 10),
        "skipped": run.skipped,
        "tick": run.tick,
    }
    batches = [int(b) for b in wm.get("batches") or (1, 32)]
    results = []
    for experiment in wm.get("experiments") or ():
        for sparsity in sparsities:
            setup = experiment_model(str(experiment), sparsity, settings.seed)
            results += bench_whole_model(
                setup.model_name,
                setup.model,
                setup.masks,
                setup.input_shape,
                batches,
                usable,
                sparsity=sparsity,
                experiment=setup.experiment,
                **common,
            )
    for model_name in wm.get("models") or ():
        for sparsity in sparsities:
            torch.manual_seed(settings.seed)
            model = create_model(str(model_name), num_classes=1000, input_shape=(3, size, size))
            masks = model_masks(model, sparsity, settings.seed, float(wm.get("ablate", 0.0)))
            results += bench_whole_model(
                str(model_name),
                model,
                masks,
                (3, size, size),
                batches,
                usable,
                sparsity=sparsity,
                **common,
            )
    return results
