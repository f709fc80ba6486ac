"""``python -m suite.bench``: time the condensed-GEMM backends against dense, one record per run.

::

    python -m suite.bench                                   # profile=quick
    python -m suite.bench profile=default 'sparsities=[0.8,0.9]' 'batches=[1,256]'
    python -m suite.bench 'backends=[dense,csr,fused]' threads=2 min_run_time=0.5 pairs=20
    python -m suite.bench whole_model=true                  # + every experiment's whole model
    python -m suite.bench 'nm_patterns=[2:4,1:4,1:8]' 'sparsities=[]'   # N:M vs constant fan-in
    python -m suite.bench profile=nm                        # + whole models, N:M vs fan-in
    python -m suite.bench checkpoint=checkpoints/<run>/checkpoint.pt   # a trained model's layers

The parts: :mod:`suite.bench.settings` (the config -> checked settings, before any compute),
:mod:`suite.bench.layers` (the layer grid: every backend paired against dense ``F.linear``,
plus the A/A control ``dense_aa``; the row fields are listed there),
:mod:`suite.bench.nm` (N:M masks vs constant fan-in at the same sparsity, ``nm_patterns``),
:mod:`suite.bench.whole_model` (whole condensed models), :mod:`suite.bench.nm_whole_model`
(whole models condensed with N:M vs constant fan-in masks, ``nm_whole_model``), and this
module (the run and its record). Every speed-up comes from one protocol
(:func:`backends.timing.paired_ratio`: ABBA blocks in this process, a 95% bootstrap interval
over the pairs, the per-block samples kept).
The tables in the log are rendered by the report package (:mod:`suite.report.speed`,
:func:`suite.report.whole_model.whole_model_speedups`).

The record's metrics hold ``rows``, ``whole_model``, ``nm_whole_model`` (with
``nm_whole_model=true``), ``skipped`` ({what: reason}), the thread
settings, ``noisy`` (True when an A/A interval misses 1.0 or reaches beyond +-10%) with
``noisy_reasons``, and the load at start and end (also in the record's ``host``, with the
machine identity: :func:`suite.results.host_info`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from backends.timing import aa_noise
from suite import machine
from suite.bench.grid import layer_grid
from suite.bench.layers import AA_BACKEND, bench_layer
from suite.bench.load import check_load, cpu_load
from suite.bench.settings import (
    CONF_DIR,
    BenchConfigError,
    BenchRun,
    BenchSettings,
    plain,
    resolve_settings,
    usable_backends,
)
from suite.cli import one_line_errors
from suite.runtime import set_threads, thread_policy

__all__ = [
    "BenchConfigError",
    "BenchSettings",
    "bench_layer",
    "main",
    "noise_check",
    "resolve_settings",
    "run_bench",
    "usable_backends",
]

log = logging.getLogger(__name__)


def noise_check(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Why the run is noisy: one reason per A/A row (layer rows and whole-model results) whose
    interval misses 1.0 or reaches beyond +-10% (:func:`backends.timing.aa_noise`); empty for
    a quiet run."""
    reasons = []
    for r in rows:
        if r.get("backend") != AA_BACKEND:
            continue
        why = aa_noise(float(r["speedup_ci_low"]), float(r["speedup_ci_high"]))
        if why:
            what = r.get("experiment") or f"{r.get('in_features')}->{r.get('out_features')}"
            reasons.append(f"{what} batch {r['batch']}: {why}")
    return reasons


def _checkpoint_part(
    cfg: Any, run: BenchRun
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """Rows for the real masked Linear layers of a checkpoint, and its whole-model timing."""
    from srigl.condense import condensable_linears
    from suite.bench.whole_model import bench_whole_model
    from suite.checkpointing import load_for_bench

    settings = run.settings
    model_cfg = plain(cfg.get("model")) or {}
    loaded = load_for_bench(
        cfg.checkpoint,
        model=model_cfg.pop("name", None),
        model_options=model_cfg or None,
        num_classes=cfg.get("num_classes"),
        input_shape=plain(cfg.get("input_shape")),
    )
    model = loaded.model.to(settings.device, settings.dtype)
    rows = []
    for name in condensable_linears(model, loaded.masks):
        lin = model.get_submodule(name)
        mask = loaded.masks[f"{name}.weight"].to(settings.device)
        bias = lin.bias.detach() if lin.bias is not None else None
        rows += bench_layer(
            lin.weight.detach(),
            mask,
            bias,
            settings,
            run.names,
            layer_name=name,
            extra={"model": loaded.name, "layer": name},
            skipped=run.skipped,
            tick=run.tick,
        )
    wm = cfg.get("whole_model_options") or {}  # its backends list is for the ViT/ResNet part
    total = sum(m.numel() for m in loaded.masks.values())
    sparsity = 1.0 - sum(int(m.sum()) for m in loaded.masks.values()) / max(1, total)
    whole = bench_whole_model(
        loaded.name,
        model,
        loaded.masks,
        loaded.input_shape,
        settings.batches,
        run.names,
        structured=bool(wm.get("structured", False)),
        sparsity=sparsity,
        threads=settings.threads,
        min_run_time=settings.min_run_time,
        device=settings.device,
        dtype=settings.dtype,
        seed=settings.seed,
        rounds=settings.pairs,
        skipped=run.skipped,
        tick=run.tick,
    )
    info = {"source": loaded.source, "model": loaded.name, "input_shape": loaded.input_shape}
    return rows, whole, info


def _log_tables(rows: Sequence[Mapping[str, Any]], whole: Sequence[Mapping[str, Any]]) -> None:
    """Log the run's tables, rendered by the report package (the same tables as REPORT.md)."""
    import pandas as pd

    from suite.report.render import markdown_table
    from suite.report.speed import layer_text, machine_label
    from suite.report.whole_model import whole_model_speedups

    label = machine_label(machine.identity())  # as REPORT names it
    log.info("\n%s", layer_text(rows, label))
    if whole:
        table = whole_model_speedups(pd.DataFrame([{**w, "machine": label} for w in whole]))
        log.info("\nwhole model:\n%s", markdown_table(table))


def _measure(cfg: Any, run: BenchRun) -> tuple[list, list, dict[str, Any]]:
    """The layer rows, the whole-model results and extra metrics of one run."""
    whole: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    if cfg.get("checkpoint"):
        rows, whole, extra["checkpoint"] = _checkpoint_part(cfg, run)
    else:
        rows = layer_grid(run)
        if run.settings.whole_model:
            from suite.bench.whole_model import run_whole_models

            whole = run_whole_models(cfg, run)
        if run.settings.nm_whole_model:
            from suite.bench.nm_whole_model import run_nm_whole_models

            extra["nm_whole_model"] = run_nm_whole_models(cfg, run)
    return rows, whole, extra


def run_bench(cfg: Any) -> tuple[dict[str, Any], Any]:
    """Run the benchmark described by the composed config ``cfg`` and store one record.

    Returns:
        ``(record, path)``: the bench result record and the file it was written to.

    Raises:
        BenchMismatchError: a backend's output differs from the dense reference.
        BenchConfigError, UnknownNameError: bad settings (before any compute).
        CheckpointError: an unreadable checkpoint (the message names the file).
    """
    from tqdm import tqdm

    from suite.results import ResultStore, make_record

    settings = resolve_settings(cfg)
    load = check_load(cfg.get("load", 0) or 0)
    thread_info = set_threads(settings.threads)
    start = machine.mark_start(settings.threads)  # with the cores the host gives
    policy_start = thread_policy()
    names, skipped = usable_backends(settings.backends, settings.device, settings.dtype)
    for name, why in skipped.items():
        log.warning("skipping backend %r: %s", name, why)
    layers_per_shape = len(settings.sparsities) + 2 * len(settings.nm_patterns)
    n_cases = len(names) * len(settings.batches) * len(settings.shapes) * layers_per_shape
    bar = tqdm(
        total=None if cfg.get("checkpoint") else n_cases,
        desc="bench",
        disable=not cfg.get("progress", True),
        leave=False,
    )

    def tick(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    try:
        with cpu_load(load):
            rows, whole, extra = _measure(cfg, BenchRun(settings, names, skipped, tick))
    finally:
        bar.close()
    for what, why in skipped.items():
        if what not in settings.backends:
            log.warning("skipped %s: %s", what, why)
    if not any(r["backend"] != AA_BACKEND for r in rows):
        raise BenchConfigError(
            f"nothing was measured: backends {settings.backends} gave no usable layer here "
            f"(skipped: {skipped})"
        )
    end = machine.mark_end()  # after the busy processes of `load` stopped
    _log_tables(rows, whole)
    reasons = noise_check([*rows, *whole, *extra.get("nm_whole_model", ())])
    reasons += [
        why
        for snap, when in ((start, "start"), (end, "end"))
        if (why := machine.scaling_noise(snap, when))
    ]
    for why in reasons:
        log.warning("noisy run: %s", why)
    metrics = {
        "rows": rows,
        "skipped": skipped,
        "whole_model": whole,
        "noisy": bool(reasons),
        "noisy_reasons": reasons,
        "pairs": settings.pairs,
        "load_processes": load,  # busy processes that ran beside the measurements
        **thread_info,
        # threads, OMP_WAIT_POLICY and the 1-minute load average (at the end; and at the start)
        **thread_policy(),
        "load_avg_1m_start": policy_start["load_avg_1m"],
        # the cores the host gave at the start and the end (suite.machine.core_scaling)
        "core_scaling_start": start.get("core_scaling"),
        "core_scaling_end": end.get("core_scaling"),
        **extra,
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    record = make_record("bench", config, metrics, run_id=bench_run_id(config))
    path = ResultStore(cfg.get("results_dir") or "results/runs").write(record)
    log.info("wrote %s", path)
    return record, path


def bench_run_id(config: Mapping[str, Any]) -> str:
    """A bench record's id: the hash of its config and the machine class that ran it
    (``suite.machine.identity()["asv_name"]``), so that the same bench run on another CPU is a
    record of its own instead of replacing that machine's (a train record's id is its config
    alone: a reproduction on another machine compares with it)."""
    from suite.results import config_hash

    return config_hash({"config": dict(config), "machine": machine.identity()["asv_name"]})


@hydra.main(config_path=str(CONF_DIR), config_name="bench", version_base=None)
@one_line_errors
def main(cfg: DictConfig) -> None:
    """The Hydra entry point of ``python -m suite.bench`` (see the module docstring)."""
    run_bench(cfg)


if __name__ == "__main__":
    main()
