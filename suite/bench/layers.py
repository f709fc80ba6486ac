"""The layer bench: every backend on masked Linear layers, paired against dense ``F.linear``.

For each (layer, batch) every backend's output is first checked against ``F.linear`` in float64
(a mismatch stops the run), then each backend is timed against the dense ``F.linear`` of the same
layer with the one protocol (:func:`backends.timing.paired_ratio`: ABBA blocks in this process,
the ratio from the pairs with a 95% bootstrap interval). Next to them, the A/A control: dense
``F.linear`` against an identical copy of itself, stored as a row with ``backend: "dense_aa"``
(its interval should hold 1.0 and stay within +-10%: :func:`backends.timing.aa_noise`).

Row fields (one row per backend x batch x mode; :data:`suite.results.BENCH_ROW_KEYS` first):

- ``backend``, ``in_features``, ``out_features``, ``sparsity``, ``batch``, ``dtype``,
  ``threads``, ``mode``, ``device``, ``path``, ``variant`` (the kernel variant that ran),
  ``k``, ``n_active``; for checkpoint layers ``model`` and ``layer``;
- the paired speed-up over dense ``F.linear``: ``speedup`` (dense time / backend time),
  ``speedup_ci_low``, ``speedup_ci_high``, ``n_pairs``, ``verdict`` (faster / slower / no
  measurable difference), and the samples: ``samples_s`` and ``dense_samples_s`` (per-call
  seconds of each block, pair i = element i of both), ``calls_per_block``;
- times: ``median_s``, ``iqr_s``, ``min_s`` and ``dense_median_s``, ``dense_iqr_s``,
  ``dense_min_s`` over the blocks; ``runs`` (blocks); ``gbps`` and ``dense_gbps``;
- in the same run and case: ``csr_median_s`` and ``speedup_vs_csr`` (this row's speed-up over
  the csr row's, both paired with the same dense layer), ``best_dense`` (the fastest dense
  baseline backend measured: :func:`suite.bench.settings.dense_baselines`) and
  ``speedup_vs_best_dense``, each with ``_ci_low`` / ``_ci_high``
  (:func:`backends.timing.quotient_interval`);
- the machine-limit fields of :func:`suite.bench.roofline.roofline_fields` (CPU rows);
- ``pattern``: ``"fan_in"`` (constant fan-in masks of the grid) or ``"N:M"``, with the N:M
  comparison's fields (``nm_pair``, ``speedup_vs_fan_in``...: :mod:`suite.bench.nm`);
  checkpoint rows and rows of older records have none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F

import backends
from backends.condensed import CondensedLinear
from backends.fused_cpu import kernel_index_dtype
from backends.timing import PairedRatio, paired_ratio, quotient_interval, verdict
from suite.bench.roofline import MachineProbe, machine_probe, roofline_fields
from suite.bench.settings import BenchSettings, dense_baselines
from suite.bench.timing import check_linear

__all__ = [
    "AA_BACKEND",
    "FAN_IN",
    "LayerSetup",
    "bench_layer",
    "case_rows",
    "kernel_variant",
    "layer_setup",
    "paired_fields",
    "quotient_fields",
]

AA_BACKEND = "dense_aa"
#: the ``pattern`` of rows with constant fan-in masks (N:M rows carry ``"N:M"``)
FAN_IN = "fan_in"


def _layer_bytes(layer: torch.nn.Module, dtype: torch.dtype) -> int:
    """Bytes a layer must read for its weights: the ideal condensed form for condensed
    layers (values + int16/int32 indices + bias), else its stored state."""
    elem = torch.empty((), dtype=dtype).element_size()
    if isinstance(layer, CondensedLinear):
        idx = kernel_index_dtype(layer.in_features).itemsize
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


def _quartiles(times: Sequence[float]) -> tuple[float, float, float]:
    """(median, IQR, minimum) of ``times``."""
    ordered = torch.tensor(list(times), dtype=torch.float64)
    q1, med, q3 = torch.quantile(ordered, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    return float(med), float(q3 - q1), float(ordered.min())


def paired_fields(ratio: PairedRatio) -> dict[str, Any]:
    """The row fields of one paired measurement (speed-up, interval, samples, times)."""
    med, iqr, low = _quartiles(ratio.candidate_s)
    dmed, diqr, dlow = _quartiles(ratio.baseline_s)
    return {
        **ratio.fields(),
        "verdict": verdict(ratio.ci_low, ratio.ci_high),
        "median_s": med,
        "iqr_s": iqr,
        "min_s": low,
        "dense_median_s": dmed,
        "dense_iqr_s": diqr,
        "dense_min_s": dlow,
        "runs": ratio.n_pairs,
        "samples_s": list(ratio.candidate_s),
        "dense_samples_s": list(ratio.baseline_s),
        "calls_per_block": list(ratio.calls),
    }


def _roofline(
    row: Mapping[str, Any], dense_names: Sequence[str], probe: MachineProbe
) -> dict[str, Any]:
    """Where the row's call stands on this machine's roofline
    (:func:`suite.bench.roofline.roofline_fields` on ``probe``, the machine probe of the
    case's thread count): achieved GFLOP/s, bytes per call, the limit and ``pct_of_limit``.

    Dense baselines (``dense_names``, the A/A row) multiply every weight; ``structured`` every
    weight of its active neurons; the other backends k weights of each active neuron. CPU rows
    only (the probe measures this CPU); others get no fields.
    """
    if not row.get("median_s"):
        return {}
    backend = row["backend"]
    in_f, out_f = int(row["in_features"]), int(row["out_features"])
    active = int(row.get("n_active") or out_f)
    if backend == AA_BACKEND or backend in dense_names:
        out, density = out_f, 1.0
    elif backend == "structured":
        out, density = active, 1.0
    else:
        out, density = active, max(int(row.get("k") or 1), 1) / max(in_f, 1)
    return roofline_fields(
        in_f, out, int(row["batch"]), min(density, 1.0), float(row["median_s"]), probe
    )


def _create_layers(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    names: Sequence[str],
    layer_name: str | None,
    label: str,
    skipped: dict[str, str],
) -> dict[str, torch.nn.Module]:
    """``{backend: layer}`` for the backends that accept the layer (the others to ``skipped``)."""
    layers = {}
    for name in names:
        try:
            layers[name] = backends.create(name, weight, mask, bias, layer_name=layer_name)
        except ValueError as exc:
            skipped[f"{name}@{label}"] = f"{type(exc).__name__}: {exc}"
    return layers


def _compare_in_run(rows: list[dict[str, Any]], baselines: Sequence[str]) -> None:
    """Add csr_median_s / speedup_vs_csr and best_dense / speedup_vs_best_dense to the rows of
    one case (one batch: every backend and mode), each from this run's paired speed-ups."""
    for mode in {r["mode"] for r in rows}:
        same = [r for r in rows if r["mode"] == mode]
        csr = next((r for r in same if r["backend"] == "csr"), None)
        dense = [r for r in same if r["backend"] in baselines]
        best = max(dense, key=lambda r: r["speedup"]) if dense else None
        for r in same:
            r["csr_median_s"] = csr["median_s"] if csr else None
            r.update(quotient_fields(r, csr, "speedup_vs_csr"))
            r["best_dense"] = best["backend"] if best else None
            r.update(quotient_fields(r, best, "speedup_vs_best_dense"))


def quotient_fields(
    row: Mapping[str, Any], other: Mapping[str, Any] | None, key: str
) -> dict[str, Any]:
    """``key`` (row's speed-up / other's, both over the same dense layer in this run) and its
    interval (:func:`backends.timing.quotient_interval`); None without ``other``."""
    if other is None:
        return {key: None, f"{key}_ci_low": None, f"{key}_ci_high": None}
    est, low, high = quotient_interval(
        (row["dense_samples_s"], row["samples_s"]), (other["dense_samples_s"], other["samples_s"])
    )
    return {key: est, f"{key}_ci_low": low, f"{key}_ci_high": high}


@dataclass
class LayerSetup:
    """One masked layer ready for timing: its backends' layers, masked weight and bias, the
    fields every row of it shares (``common``, ``extra``) and the dense baselines among them."""

    layers: dict[str, torch.nn.Module]
    masked: torch.Tensor
    bias: torch.Tensor | None
    label: str
    common: dict[str, Any]
    extra: dict[str, Any]
    baselines: list[str]


def layer_setup(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    backend_names: Sequence[str],
    settings: BenchSettings,
    *,
    layer_name: str | None = None,
    extra: Mapping[str, Any] | None = None,
    skipped: dict[str, str] | None = None,
) -> LayerSetup:
    """Build every backend's layer for ``weight * mask`` (weight [out, in], mask bool [out, in],
    bias [out] or None); backends that reject it go to ``skipped`` as
    ``"<backend>@<layer>": reason``."""
    out_f, in_f = weight.shape
    label = layer_name or f"{in_f}->{out_f}"
    skipped = skipped if skipped is not None else {}
    layers = _create_layers(weight, mask, bias, backend_names, layer_name, label, skipped)
    counts = mask.sum(dim=1)
    n_active = int((counts > 0).sum())
    common = {
        "in_features": int(in_f),
        "out_features": int(out_f),
        "sparsity": round(1.0 - float(mask.float().mean()), 6),
        "dtype": str(settings.dtype).removeprefix("torch."),
        "threads": settings.threads,
        "device": settings.device.type,
        "k": int(counts.max()) if n_active else 0,
        "n_active": n_active,
    }
    return LayerSetup(
        layers, weight * mask, bias, label, common, dict(extra or {}), dense_baselines(list(layers))
    )


def case_rows(
    setup: LayerSetup,
    settings: BenchSettings,
    x: torch.Tensor,
    *,
    aa: bool = True,
    tick: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """One case (``setup``'s layer on the input ``x`` [batch, in]): the A/A control (when
    ``aa``) and every backend's paired rows, with the in-run comparisons and roofline fields."""
    batch = int(x.shape[0])
    case = _Case(
        settings, x, setup.masked, setup.bias, setup.label,
        {**setup.common, "batch": batch}, setup.extra,
    )  # fmt: skip
    rows = [case.aa_row()] if aa else []
    for name, layer in setup.layers.items():
        rows += case.backend_rows(name, layer)
        if tick:
            tick(f"{name} {setup.label} b={batch}")
    _compare_in_run([r for r in rows if r["backend"] != AA_BACKEND], setup.baselines)
    if settings.device.type != "cpu":
        return rows
    probe = machine_probe(settings.threads)  # once per case: a cache-file read, not per row
    return [{**r, **_roofline(r, setup.baselines, probe)} for r in rows]


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
    """Time one masked Linear layer with every backend over ``settings.batches`` and modes,
    plus the A/A control (``dense_aa``) per batch.

    Args:
        weight: [out, in] in the bench dtype on the bench device; mask: bool [out, in];
            bias: [out] or None.
        backend_names: backends able to run here (see :func:`suite.bench.settings.usable_backends`).
        extra: fields added to every row (e.g. model and layer names).
        skipped: collects ``"<backend>@<layer>": reason`` for backends that reject the layer
            (e.g. a mask without constant fan-in).
        tick: called after each timed case (progress bar).

    Returns:
        The rows (see the module docstring).

    Raises:
        BenchMismatchError: a backend's output differs from ``F.linear`` (never timed then).
    """
    setup = layer_setup(
        weight, mask, bias, backend_names, settings,
        layer_name=layer_name, extra=extra, skipped=skipped,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(settings.seed)
    rows: list[dict[str, Any]] = []
    for batch in settings.batches:
        x = torch.randn(batch, weight.shape[1], generator=gen).to(settings.device, settings.dtype)
        rows += case_rows(setup, settings, x, tick=tick)
    return rows


class _Case:
    """One (layer, batch) of :func:`bench_layer`: its input, dense reference and row fields."""

    def __init__(
        self,
        settings: BenchSettings,
        x: torch.Tensor,
        masked: torch.Tensor,
        bias: torch.Tensor | None,
        label: str,
        common: dict[str, Any],
        extra: Mapping[str, Any] | None,
    ) -> None:
        self.settings, self.x, self.masked, self.bias = settings, x, masked, bias
        self.label, self.common, self.extra = label, common, dict(extra or {})
        self.dense_fn = partial(F.linear, x, masked, bias)
        elem = masked.element_size()
        self.io_bytes = x.shape[0] * (masked.shape[0] + masked.shape[1]) * elem
        self.dense_bytes = masked.numel() * elem + (bias.numel() * elem if bias is not None else 0)

    def _paired(self, fn: Callable[[], object]) -> PairedRatio:
        s = self.settings
        return paired_ratio(
            fn,
            self.dense_fn,
            pairs=s.pairs,
            block_seconds=s.block_seconds,
            threads=s.threads,
            seed=s.seed,
        )

    def _row(self, backend: str, mode: str, ratio: PairedRatio, **fields: Any) -> dict[str, Any]:
        row = {"backend": backend, **self.common, "mode": mode, **paired_fields(ratio)}
        row["dense_gbps"] = (self.dense_bytes + self.io_bytes) / row["dense_median_s"] / 1e9
        return {**row, **fields, **self.extra}

    def aa_row(self) -> dict[str, Any]:
        """Dense ``F.linear`` against an identical copy of itself (the A/A control)."""
        copy_w = self.masked.clone()
        copy_b = self.bias.clone() if self.bias is not None else None
        ratio = self._paired(partial(F.linear, self.x, copy_w, copy_b))
        modes = self.settings.modes
        mode = "end_to_end" if "end_to_end" in modes else modes[0]
        gbps = (self.dense_bytes + self.io_bytes) / max(paired_fields(ratio)["median_s"], 1e-12)
        return self._row(AA_BACKEND, mode, ratio, path="F.linear", variant=None, gbps=gbps / 1e9)

    def backend_rows(self, name: str, layer: torch.nn.Module) -> list[dict[str, Any]]:
        """Check ``layer``'s output, then one paired row per mode (a path is timed once)."""
        done: dict[str, PairedRatio] = {}
        rows = []
        for mode in self.settings.modes:
            fn, path, to_rows = _timed_call(layer, self.x, mode)
            if path not in done:
                with torch.no_grad():
                    check_linear(
                        to_rows(fn()),
                        self.x,
                        self.masked,
                        self.bias,
                        f"backend {name!r} ({path}) on {self.label}, sparsity "
                        f"{self.common['sparsity']:.4f}, batch {self.common['batch']}",
                    )
                done[path] = self._paired(fn)
            ratio = done[path]
            med = paired_fields(ratio)["median_s"]
            weight_bytes = _layer_bytes(layer, self.settings.dtype)
            rows.append(
                self._row(
                    name,
                    mode,
                    ratio,
                    path=path,
                    variant=kernel_variant(layer, self.common["batch"]),
                    gbps=(weight_bytes + self.io_bytes) / med / 1e9,
                )
            )
        return rows
