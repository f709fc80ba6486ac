"""Whole-model inference timing: condensed models vs the dense eval-mode model and the
BN-folded dense model, measured in the same run.

For each backend the model is condensed with ``srigl.condense`` (Linear and Conv2d layers,
attention blocks, eval-mode BatchNorm folded into the convolutions), its output is checked
against the masked dense model on the same input, then the condensed model, the masked dense
eval model and the BN-folded masked dense model (``srigl.condense_conv.fold_batchnorm``) are
timed in alternation per batch size. Each result is one dict of ``metrics.whole_model``::

    {model, experiment, backend, structured, batch, sparsity, dtype, threads, device,
     median_s, iqr_s, min_s, dense_median_s, dense_iqr_s, dense_min_s,
     folded_median_s, folded_iqr_s, folded_min_s, condensed_layers, kept_layers,
     condensed_weight_fraction, input_shape,
     params_dense, params_condensed, flops_dense, flops_condensed, bytes_dense, bytes_condensed}

``condensed_weight_fraction`` is the share of the model's weights (parameters with dim >= 2)
that sit in condensed layers. ``params_*``, ``flops_*`` (multiply-adds per sample of the weight
layers) and ``bytes_*`` (parameter storage) come from :mod:`suite.train.cost`.

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
from srigl.condense_conv import fold_batchnorm
from suite.bench.timing import check_close, measure_interleaved

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
    experiment: str | None = None,
) -> list[dict[str, Any]]:
    """Time ``model`` condensed with each backend against its masked dense eval form and its
    BN-folded masked dense form.

    Args:
        name: model label stored in each result.
        model: the model (weights in ``dtype`` on ``device`` are made from a copy).
        masks: {parameter name: bool mask}.
        input_shape: one sample's shape; inputs are standard normal [batch, *input_shape].
        batches: batch sizes.
        backend_names: backends to condense with (available ones; others go to ``skipped``).
        rounds: alternations of the three models per timing (see
            :func:`suite.bench.timing.measure_interleaved`).
        skipped: dict collecting ``"<model>/<backend>": reason`` for what could not run.
        tick: called after each measurement (progress bar).
        experiment: the experiment name stored in each result (None: the model's name).

    Returns:
        One result dict per (backend, batch) (see the module docstring).

    Raises:
        BenchMismatchError: a condensed model's output differs from the masked dense model's.
    """
    skipped = skipped if skipped is not None else {}
    dense = masked_dense(model, masks).to(device=device, dtype=dtype)
    folded = fold_batchnorm(dense).eval()
    n_folded = len(folded.condense_report.folded)
    dev_masks = {k: v.to(device) for k, v in masks.items()}
    total_weights = sum(p.numel() for p in dense.parameters() if p.dim() >= 2)
    costs = _costs(dense, dev_masks, input_shape, device)
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
                report = small.condense_report
                check_close(small(x), want, f"{name} condensed with {backend!r}, batch {batch}")
                fns = {"sparse": partial(small, x), "dense": partial(dense, x)}
                if n_folded:
                    fns["folded"] = partial(folded, x)
                pair = measure_interleaved(fns, threads, min_run_time, rounds)
                t, base = pair["sparse"], pair["dense"]
                fold = pair.get("folded", base)
                results.append(
                    {
                        "model": name,
                        "experiment": experiment or name,
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
                        "folded_median_s": fold.median_s,
                        "folded_iqr_s": fold.iqr_s,
                        "folded_min_s": fold.min_s,
                        "condensed_layers": len(report.condensed),
                        "kept_layers": sorted(report.kept),
                        "condensed_weight_fraction": (
                            _condensed_weights(dense, report.condensed) / total_weights
                            if total_weights
                            else 0.0
                        ),
                        "input_shape": [int(s) for s in input_shape],
                        **costs,
                    }
                )
                if tick:
                    tick(f"{name} {backend} b={batch}")
    return results
