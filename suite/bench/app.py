"""``python -m suite.bench``: time the condensed-GEMM backends against dense, one record per run.

::

    python -m suite.bench                                   # profile=quick
    python -m suite.bench profile=default 'sparsities=[0.8,0.9]' 'batches=[1,256]'
    python -m suite.bench 'backends=[dense,csr,fused]' threads=2 min_run_time=0.5
    python -m suite.bench whole_model=true                  # + every experiment's whole model
    python -m suite.bench checkpoint=checkpoints/<run>/checkpoint.pt   # a trained model's layers

The grid is backends x layer shapes ([in, out]) x sparsity x batch x mode. Top-level keys
(``shapes``, ``sparsities``, ``batches``, ``backends``, ``min_run_time``, ``whole_model``)
override the profile's ``bench:`` section; null takes the profile's value. Each backend is
timed in alternation with the dense ``F.linear`` of the same (shape, sparsity, batch)
(``rounds`` alternations, ``min_run_time`` seconds per side in all, per-call times pooled:
see :func:`suite.bench.timing.measure_interleaved`), so every row's ``dense_median_s`` was measured
under the same machine load as its ``median_s``. Each backend's output is checked against
``F.linear`` in float64 first (a mismatch stops the run). Modes:

- ``end_to_end``: ``layer(x)`` with x [batch, in] -> [batch, out];
- ``kernel``: ``layer.forward_transposed(xT)`` with xT [in, batch] -> [out, batch] for backends
  that offer that layout; for the others their forward again (row field ``path`` says which).

Each row holds the keys of DESIGN.md (backend, in_features, out_features, sparsity, batch,
dtype, threads, mode, median_s, iqr_s, dense_median_s) plus device, path, runs, k, n_active,
dense_iqr_s, min_s and dense_min_s (fastest call: the least disturbed figure on a busy
machine), csr_median_s (the csr backend's time in the same case, if it ran), gbps and
dense_gbps (bytes of the layer's stored form plus input and output, per second; for condensed
layers the ideal form: values + int16 indices when in < 32768, else int32), ``variant`` (the
kernel variant that ran, e.g. ``avx2/perm8x16/par`` for ``fused``, picked by its autotuner;
None for single-path backends), and for checkpoint layers ``model`` and ``layer``. The record's
metrics hold ``threads``, ``omp_wait_policy`` (None: the OpenMP default) and
``load_avg_1m`` at the end of the run (``load_avg_1m_start`` at its start): a load above the
core count marks timings taken on a loaded machine. Backends that cannot run here are listed in
``metrics.skipped`` ({what: reason}) and printed. Whole-model results go to
``metrics.whole_model`` (see :mod:`suite.bench.whole_model`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

import backends
from backends.condensed import CondensedLinear
from srigl.errors import require_int
from srigl.masks import constant_fan_in_mask
from suite.bench.masks import model_masks
from suite.bench.timing import Timing, check_linear, measure_interleaved
from suite.cli import one_line_errors
from suite.runtime import DeviceError, parse_device, set_threads, thread_policy

__all__ = ["BenchSettings", "bench_layer", "main", "resolve_settings", "run_bench"]

log = logging.getLogger(__name__)
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MODES = ("kernel", "end_to_end")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROFILE_KEYS = ("shapes", "sparsities", "batches", "backends", "min_run_time", "whole_model")


class BenchConfigError(ValueError):
    """A bench setting has a value outside the allowed ones (the message lists them)."""


@dataclass
class BenchSettings:
    """The resolved grid and timing settings of one bench run."""

    shapes: list[tuple[int, int]]
    sparsities: list[float]
    batches: list[int]
    backends: list[str]
    min_run_time: float
    whole_model: bool
    threads: int
    dtype: torch.dtype
    device: torch.device
    modes: list[str]
    seed: int
    ablate: float
    rounds: int


@dataclass
class _Run:
    """What the parts of one bench run share: its settings, the usable backends, the
    ``skipped`` {what: why} they fill and the progress bar's tick (called after each case)."""

    settings: BenchSettings
    names: Sequence[str]
    skipped: dict[str, str]
    tick: Callable[[str], None]


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python containers (other values unchanged)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _pick(cfg: Any, key: str) -> Any:
    """Top-level ``cfg[key]`` unless null, else ``cfg.profile.bench[key]``."""
    value = cfg.get(key)
    if value is None:
        profile = cfg.get("profile") or {}
        value = (profile.get("bench") or {}).get(key)
    return value


def resolve_settings(cfg: Any) -> BenchSettings:
    """Merge the top-level overrides with the profile's ``bench:`` section and check them.

    Raises:
        BenchConfigError: an unknown mode / dtype / device, or an empty or malformed list.
        UnknownNameError: an unknown backend name (lists the known ones).
    """

    values = {k: plain(_pick(cfg, k)) for k in PROFILE_KEYS}
    for key in ("shapes", "sparsities", "batches"):
        if not values[key]:
            raise BenchConfigError(f"{key} must be a non-empty list, got {values[key]!r}")
    shapes = []
    for s in values["shapes"]:
        if not isinstance(s, (list, tuple)) or len(s) != 2 or min(s) < 1:
            raise BenchConfigError(f"a shape is [in_features, out_features] >= 1, got {s!r}")
        shapes.append((int(s[0]), int(s[1])))
    names = values["backends"] or backends.names()
    wm = cfg.get("whole_model_options") or {}
    for n in [*names, *(plain(wm.get("backends")) or [])]:
        backends.get(n)  # UnknownNameError lists the known names
    modes = list(plain(cfg.get("modes")) or MODES)
    for m in modes:
        if m not in MODES:
            raise BenchConfigError(f"mode {m!r} is not one of {MODES}")
    dtype_name = str(cfg.get("dtype") or "float32")
    if dtype_name not in DTYPES:
        raise BenchConfigError(f"dtype {dtype_name!r} is not one of {sorted(DTYPES)}")
    try:
        device = parse_device(str(cfg.get("device") or "cpu"))
    except DeviceError as exc:
        raise BenchConfigError(str(exc)) from None
    threads = cfg.get("threads")
    allowed_threads = "an integer >= 1 or null"
    if (
        threads is not None
        and require_int("threads", threads, allowed_threads, BenchConfigError) < 1
    ):
        raise BenchConfigError(f"threads={threads!r} is invalid; allowed: {allowed_threads}")
    min_run_time = float(values["min_run_time"] if values["min_run_time"] is not None else 0.2)
    if min_run_time <= 0:
        raise BenchConfigError(f"min_run_time must be > 0 seconds, got {min_run_time}")
    return BenchSettings(
        shapes=shapes,
        sparsities=[float(s) for s in values["sparsities"]],
        batches=[int(b) for b in values["batches"]],
        backends=list(names),
        min_run_time=min_run_time,
        whole_model=bool(values["whole_model"]),
        threads=int(threads) if threads is not None else (os.cpu_count() or 1),
        dtype=DTYPES[dtype_name],
        device=device,
        modes=modes,
        seed=int(cfg.get("seed") or 0),
        ablate=float(cfg.get("ablate") or 0.0),
        rounds=int(cfg.get("rounds") or 3),
    )


def usable_backends(
    names: Sequence[str], device: torch.device, dtype: torch.dtype
) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into those that run ``dtype`` on ``device`` here and ``{name: why not}``."""
    ok, skipped = [], {}
    for name in names:
        can, why = backends.get(name).supports(device, dtype)
        if can:
            ok.append(name)
        else:
            skipped[name] = why
    return ok, skipped


def _layer_bytes(layer: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes a layer must read for its weights: the ideal condensed form for condensed
    layers (values + int16/int32 indices + bias), else its stored state."""
    elem = torch.empty((), dtype=dtype).element_size()
    if isinstance(layer, CondensedLinear):
        idx = 2 if layer.in_features < 32768 else 4
        return layer.values.numel() * (elem + idx) + layer.out_features * elem
    return sum(
        t.numel() * t.element_size()
        for t in layer.state_dict().values()
        if isinstance(t, torch.Tensor)
    )


def _timed_call(layer: torch.nn.Module, x: torch.Tensor, mode: str) -> tuple[Callable, str, Any]:
    """(callable to time, path name, how to compare its output with [batch, out])."""
    if mode == "kernel" and hasattr(layer, "forward_transposed"):
        xt = x.t().contiguous()
        return (lambda: layer.forward_transposed(xt)), "forward_transposed", (lambda y: y.t())
    return (lambda: layer(x)), "forward", (lambda y: y)


def kernel_variant(layer: torch.nn.Module, batch: int) -> str | None:
    """The kernel variant ``layer`` runs for ``batch`` rows (``fused``: e.g. ``avx2/perm8x16/par``;
    None for backends with a single path)."""
    variant_for = getattr(layer, "variant_for", None)
    return variant_for(int(batch)) if callable(variant_for) else None


def bench_layer(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    settings: BenchSettings,
    backend_names: Sequence[str],
    *,
    layer_name: str | None = None,
    extra: Mapping[str, Any] | None = None,
    skipped: dict[str, str] | None = None,
    tick: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time one masked Linear layer with every backend over ``settings.batches`` and modes.

    Args:
        weight: [out, in] in the bench dtype on the bench device; mask: bool [out, in];
            bias: [out] or None.
        backend_names: backends able to run here (see :func:`usable_backends`).
        extra: fields added to every row (e.g. model and layer names).
        skipped: collects ``"<backend>@<layer>": reason`` for backends that reject the layer
            (e.g. a mask without constant fan-in).
        tick: called after each timed case (progress bar).

    Returns:
        The rows (see the module docstring).

    Raises:
        BenchMismatchError: a backend's output differs from ``F.linear`` (never timed then).
    """
    out_f, in_f = weight.shape
    label = layer_name or f"{in_f}->{out_f}"
    skipped = skipped if skipped is not None else {}
    masked = weight * mask
    sparsity = 1.0 - float(mask.float().mean())
    layers = {}
    for name in backend_names:
        try:
            layers[name] = backends.create(name, weight, mask, bias, layer_name=layer_name)
        except ValueError as exc:
            skipped[f"{name}@{label}"] = f"{type(exc).__name__}: {exc}"
    counts = mask.sum(dim=1)
    n_active = int((counts > 0).sum())
    k = int(counts.max()) if n_active else 0
    elem = weight.element_size()
    gen = torch.Generator().manual_seed(settings.seed)
    rows: list[dict[str, Any]] = []
    for batch in settings.batches:
        x = torch.randn(batch, in_f, generator=gen).to(settings.device, settings.dtype)
        io_bytes = batch * (in_f + out_f) * elem
        dense_fn = partial(F.linear, x, masked, bias)
        dense_bytes = masked.numel() * elem + (out_f * elem if bias is not None else 0)
        case_rows = []
        for name, layer in layers.items():
            done: dict[str, dict[str, Timing]] = {}
            for mode in settings.modes:
                fn, path, to_rows = _timed_call(layer, x, mode)
                if path not in done:
                    with torch.no_grad():
                        check_linear(
                            to_rows(fn()),
                            x,
                            masked,
                            bias,
                            f"backend {name!r} ({path}) on {label}, sparsity {sparsity:.4f}, "
                            f"batch {batch}",
                        )
                    done[path] = measure_interleaved(
                        {"sparse": fn, "dense": dense_fn},
                        settings.threads,
                        settings.min_run_time,
                        settings.rounds,
                    )
                    if tick:
                        tick(f"{name} {label} b={batch}")
                t, dense = done[path]["sparse"], done[path]["dense"]
                case_rows.append(
                    {
                        "backend": name,
                        "in_features": int(in_f),
                        "out_features": int(out_f),
                        "sparsity": round(sparsity, 6),
                        "batch": int(batch),
                        "dtype": str(settings.dtype).removeprefix("torch."),
                        "threads": settings.threads,
                        "mode": mode,
                        "median_s": t.median_s,
                        "iqr_s": t.iqr_s,
                        "dense_median_s": dense.median_s,
                        "dense_iqr_s": dense.iqr_s,
                        "min_s": t.min_s,
                        "dense_min_s": dense.min_s,
                        "device": settings.device.type,
                        "path": path,
                        "variant": kernel_variant(layer, batch),
                        "runs": t.runs,
                        "k": k,
                        "n_active": n_active,
                        "gbps": (_layer_bytes(layer, settings.dtype) + io_bytes) / t.median_s / 1e9,
                        "dense_gbps": (dense_bytes + io_bytes) / dense.median_s / 1e9,
                        **(extra or {}),
                    }
                )
        csr = {r["mode"]: r["median_s"] for r in case_rows if r["backend"] == "csr"}
        for r in case_rows:
            r["csr_median_s"] = csr.get(r["mode"])
        rows.extend(case_rows)
    return rows


def _layer_grid(run: _Run) -> list[dict[str, Any]]:
    """The synthetic grid: random weights with constant fan-in masks per shape x sparsity."""
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
                extra={"sparsity": sp},  # nominal; the mask's is 1 - k/in, within 1/in of it
                skipped=run.skipped,
                tick=run.tick,
            )
    return rows


def _checkpoint_part(
    cfg: Any, run: _Run
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
        skipped=run.skipped,
        tick=run.tick,
    )
    info = {"source": loaded.source, "model": loaded.name, "input_shape": loaded.input_shape}
    return rows, whole, info


def _whole_models(cfg: Any, run: _Run) -> list[dict[str, Any]]:
    """Condensed vs dense (eval and BN-folded) for the configured experiments (each model at
    its input size, masks from the experiment's SRigL set-up) and models (random init,
    SRigL-like masks on Linear layers)."""
    from suite.bench.whole_model import bench_whole_model, experiment_model
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
        "rounds": int(wm.get("rounds") or 1),
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


def speedup_tables(rows: Sequence[Mapping[str, Any]]) -> str:
    """Text tables of speed-up vs dense and vs CSR: a row per (mode, shape, sparsity, batch),
    a column per backend."""
    import pandas as pd

    if not rows:
        return "(no rows)"
    frame = pd.DataFrame(list(rows))
    frame["shape"] = frame["in_features"].astype(str) + "->" + frame["out_features"].astype(str)
    frame["vs_dense"] = frame["dense_median_s"] / frame["median_s"]
    csr = frame["csr_median_s"] if "csr_median_s" in frame else None
    index = ["mode", "shape", "sparsity", "batch"]
    if "layer" in frame and frame["layer"].notna().any():
        index = ["mode", "layer", "shape", "sparsity", "batch"]
    out = []
    dense_us = frame.groupby(index)["dense_median_s"].first() * 1e6
    wide = frame.pivot_table(index=index, columns="backend", values="vs_dense", aggfunc="first")
    wide.insert(0, "dense_us", dense_us)
    out.append(
        "speed-up vs dense (dense F.linear time in us):\n"
        + wide.to_string(float_format="{:.2f}".format)
    )
    if csr is not None and csr.notna().any():
        frame["vs_csr"] = pd.to_numeric(csr, errors="coerce") / frame["median_s"]
        wide = frame.pivot_table(index=index, columns="backend", values="vs_csr", aggfunc="first")
        out.append("speed-up vs csr:\n" + wide.to_string(float_format="{:.2f}".format))
    one = frame[frame["batch"] == 1]
    if not one.empty and "gbps" in one:
        idx = [i for i in index if i != "batch"]
        wide = one.pivot_table(index=idx, columns="backend", values="gbps", aggfunc="first")
        wide.insert(0, "dense_F.linear", one.groupby(idx)["dense_gbps"].first())
        out.append(
            "GB/s at batch 1 (weights in the ideal stored form + input + output, per second):\n"
            + wide.to_string(float_format="{:.1f}".format)
        )
    if "min_s" in frame:
        frame["vs_dense_min"] = frame["dense_min_s"] / frame["min_s"]
        wide = frame.pivot_table(
            index=index, columns="backend", values="vs_dense_min", aggfunc="first"
        )
        out.append(
            "speed-up vs dense from the fastest calls (robust on a busy machine):\n"
            + wide.to_string(float_format="{:.2f}".format)
        )
    return "\n\n".join(out)


def whole_model_table(results: Sequence[Mapping[str, Any]]) -> str:
    """Text table of whole-model times and speed-ups vs the masked dense model."""
    if not results:
        return ""
    lines = [
        f"{'model':<12} {'backend':<11} {'struct':<6} {'batch':>5} {'dense ms':>10} "
        f"{'sparse ms':>10} {'speed-up':>8} {'(min)':>7} {'vs fold':>9} {'condensed weights':>17}"
    ]
    for r in results:
        lines.append(
            f"{r['model']:<12} {r['backend']:<11} {str(r['structured']):<6} {r['batch']:>5} "
            f"{r['dense_median_s'] * 1e3:>10.2f} {r['median_s'] * 1e3:>10.2f} "
            f"{r['dense_median_s'] / r['median_s']:>7.2f}x "
            f"{r['dense_min_s'] / r['min_s']:>6.2f}x "
            f"{r.get('folded_median_s', r['dense_median_s']) / r['median_s']:>8.2f}x "
            f"{r['condensed_weight_fraction'] * 100:>16.1f}%"
        )
    return "whole model (vs masked dense eval; vs BN-folded dense):\n" + "\n".join(lines)


def run_bench(cfg: Any) -> tuple[dict[str, Any], Any]:
    """Run the benchmark described by the composed config ``cfg`` and store one record.

    Returns:
        ``(record, path)``: the bench result record and the file it was written to.

    Raises:
        BenchMismatchError: a backend's output differs from the dense reference.
        BenchConfigError, UnknownNameError: bad settings.
        CheckpointError: an unreadable checkpoint (the message names the file).
    """
    from tqdm import tqdm

    from suite.results import ResultStore, make_record

    settings = resolve_settings(cfg)
    thread_info = set_threads(settings.threads)
    policy_start = thread_policy()
    names, skipped = usable_backends(settings.backends, settings.device, settings.dtype)
    for name, why in skipped.items():
        log.warning("skipping backend %r: %s", name, why)
    checkpoint = cfg.get("checkpoint")
    n_cases = len(names) * len(settings.batches) * len(set(settings.modes))
    total = n_cases * len(settings.shapes) * len(settings.sparsities) if not checkpoint else None
    bar = tqdm(total=total, desc="bench", disable=not cfg.get("progress", True), leave=False)

    def tick(what: str) -> None:
        bar.set_postfix_str(what, refresh=False)
        bar.update(1)

    run = _Run(settings, names, skipped, tick)
    whole: list[dict[str, Any]] = []
    extra: dict[str, Any] = {}
    try:
        if checkpoint:
            rows, whole, extra["checkpoint"] = _checkpoint_part(cfg, run)
        else:
            rows = _layer_grid(run)
        if settings.whole_model and not checkpoint:
            whole = _whole_models(cfg, run)
    finally:
        bar.close()
    for what, why in skipped.items():
        if what not in settings.backends:
            log.warning("skipped %s: %s", what, why)
    if not rows:
        raise BenchConfigError(
            f"nothing was measured: backends {settings.backends} gave no usable layer here "
            f"(skipped: {skipped})"
        )
    log.info("\n%s", speedup_tables(rows))
    if whole:
        log.info("\n%s", whole_model_table(whole))
    metrics = {
        "rows": rows,
        "skipped": skipped,
        "whole_model": whole,
        **thread_info,
        # threads, OMP_WAIT_POLICY and the 1-minute load average (at the end; and at the start)
        **thread_policy(),
        "load_avg_1m_start": policy_start["load_avg_1m"],
        **extra,
    }
    config = OmegaConf.to_container(cfg, resolve=True)
    record = make_record("bench", config, metrics)
    path = ResultStore(cfg.get("results_dir") or "results/runs").write(record)
    log.info("wrote %s", path)
    return record, path


@hydra.main(config_path=str(CONF_DIR), config_name="bench", version_base=None)
@one_line_errors
def main(cfg: DictConfig) -> None:
    """The Hydra entry point of ``python -m suite.bench`` (see the module docstring)."""
    run_bench(cfg)


if __name__ == "__main__":
    main()
