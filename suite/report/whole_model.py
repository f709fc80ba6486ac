"""The report's whole-model part: a per-model table and a figure of condensed whole models vs
the dense eval model and the BN-folded dense model (``metrics.whole_model`` of bench records,
as a frame from :func:`suite.report.frames.whole_model_frame`).

- :func:`whole_model_speedups`: the one whole-model speed-up table (the report, the bench's log
  and ``scripts/measure_whole_model.py`` all print it): one row per (model, machine, sparsity,
  batch, backend): times in ms, paired speed-up vs dense eval and vs BN-folded dense with 95%
  intervals.
- :func:`whole_model_costs`: one row per (model, sparsity): params, FLOPs and bytes, dense vs
  condensed.
- :func:`whole_model_figure`: speed-up vs dense per backend, a panel per model, hue = batch.
- :func:`nm_whole_model_table`: whole models condensed with N:M vs constant fan-in masks
  (``metrics.nm_whole_model``, :func:`suite.report.frames.nm_whole_model_frame`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from suite.report.speed import AA_BACKEND, interval_cell, speedup_cell  # noqa: E402

__all__ = [
    "nm_whole_model_table",
    "whole_model_costs",
    "whole_model_figure",
    "whole_model_speedups",
]

_KEYS = ["model", "sparsity", "batch", "backend"]


def _label(frame: pd.DataFrame) -> pd.Series:
    """Model label: the experiment name where there is one (e.g. cifar10_resnet18)."""
    if "experiment" in frame:
        return frame["experiment"].fillna(frame["model"])
    return frame["model"]


def _interval(frame: pd.DataFrame, prefix: str, fallback: pd.Series) -> list[str]:
    """Cells of ``<prefix>`` with its interval where the rows have one (else the fallback
    ratio of the same row, marked "no interval")."""
    est = pd.to_numeric(frame[prefix], errors="coerce") if prefix in frame else fallback * np.nan
    est = est.fillna(fallback)
    low = frame.get(f"{prefix}_ci_low", pd.Series(np.nan, index=frame.index))
    high = frame.get(f"{prefix}_ci_high", pd.Series(np.nan, index=frame.index))
    return [speedup_cell(e, lo, hi) for e, lo, hi in zip(est, low, high)]


def whole_model_speedups(whole: pd.DataFrame) -> pd.DataFrame:
    """The one whole-model speed-up table (report, bench log, scripts/measure_whole_model.py);
    empty in, empty out.

    Columns: model, machine (where the frame has it), sparsity, batch, backend, structured,
    dense (ms), BN-folded (ms), condensed (ms), vs dense [95% CI], vs folded [95% CI] (each the
    row's paired speed-up and interval: "no measurable difference" where it holds 1.0, "no
    interval" for older records), condensed weights (%), and run (the record's run_id).
    """
    if whole.empty or not {"median_s", "dense_median_s"} <= set(whole.columns):
        return pd.DataFrame()
    frame = whole.copy()
    frame["model"] = _label(frame)
    folded = frame["folded_median_s"] if "folded_median_s" in frame else frame["dense_median_s"]
    folded = folded.fillna(frame["dense_median_s"])
    out = pd.DataFrame({"model": frame["model"]})
    if "machine" in frame:
        out["machine"] = frame["machine"]
    out = out.assign(
        sparsity=frame["sparsity"],
        batch=frame["batch"],
        backend=frame["backend"],
        structured=frame.get("structured", False),
    )
    out["dense (ms)"] = frame["dense_median_s"] * 1e3
    out["BN-folded (ms)"] = folded * 1e3
    out["condensed (ms)"] = frame["median_s"] * 1e3
    out["vs dense [95% CI]"] = _interval(
        frame, "speedup", frame["dense_median_s"] / frame["median_s"]
    )
    out["vs folded [95% CI]"] = _interval(frame, "speedup_vs_folded", folded / frame["median_s"])
    if "condensed_weight_fraction" in frame:
        out["condensed weights (%)"] = frame["condensed_weight_fraction"] * 100
    if "run_id" in frame:  # which record: records of older code stay readable as such
        out["run"] = frame["run_id"]
    keys = ["machine", *_KEYS] if "machine" in out else _KEYS
    return out.sort_values(keys).reset_index(drop=True)


def whole_model_costs(whole: pd.DataFrame) -> pd.DataFrame:
    """Per-model cost table: params (M), GFLOPs per sample (multiply-adds of the weight layers)
    and MB of parameters, dense vs condensed, with the ratios; empty where not recorded."""
    need = {"params_dense", "params_condensed", "flops_dense", "flops_condensed"}
    if whole.empty or not need <= set(whole.columns):
        return pd.DataFrame()
    frame = whole.copy()
    frame["model"] = _label(frame)
    first = frame.groupby(["model", "sparsity"], as_index=False).first()
    out = pd.DataFrame(
        {
            "model": first["model"],
            "sparsity": first["sparsity"],
            "params dense (M)": first["params_dense"] / 1e6,
            "params condensed (M)": first["params_condensed"] / 1e6,
            "GFLOPs dense": first["flops_dense"] / 1e9,
            "GFLOPs condensed": first["flops_condensed"] / 1e9,
        }
    )
    if {"bytes_dense", "bytes_condensed"} <= set(first.columns):
        out["MB dense"] = first["bytes_dense"] / 2**20
        out["MB condensed"] = first["bytes_condensed"] / 2**20
    out["FLOPs ratio"] = first["flops_dense"] / first["flops_condensed"]
    return out


def whole_model_figure(whole: pd.DataFrame, path: Path) -> Path | None:
    """Bar chart of whole-model speed-up vs the dense eval model per backend: a panel per model
    (and sparsity), hue = batch size, dashed line at 1x; None when there is nothing to plot."""
    if whole.empty or not {"median_s", "dense_median_s"} <= set(whole.columns):
        return None
    ratio = whole["dense_median_s"] / whole["median_s"]
    own = whole["speedup_vs_dense"] if "speedup_vs_dense" in whole else ratio
    table = whole.assign(model=_label(whole), **{"vs dense": own.fillna(ratio)})
    table = table.assign(
        panel=table["model"]
        + " @ "
        + (table["sparsity"] * 100).round().astype(int).astype(str)
        + "%",
        batch=table["batch"].astype(str),
    )
    order = sorted(table["backend"].unique())
    grid = sns.catplot(
        data=table,
        x="backend",
        y="vs dense",
        hue="batch",
        col="panel",
        col_wrap=min(3, table["panel"].nunique()),
        kind="bar",
        order=order,
        height=3.2,
        aspect=1.3,
        sharey=False,
    )
    for ax in grid.axes.flat:
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.tick_params(axis="x", rotation=45)
    grid.set_axis_labels("backend", "speed-up vs dense eval (x)")
    grid.set_titles("{col_name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
    return path


def nm_whole_model_table(nm: pd.DataFrame) -> pd.DataFrame:
    """One row per (machine, model, pattern, batch, threads, backend, run) of whole models
    condensed with N:M masks vs constant fan-in masks at the same sparsity: the constant fan-in
    and N:M models' median times (ms), ``N:M vs fan-in`` (the paired speed-up of the N:M model
    over the constant fan-in model with its 95% interval: "no measurable difference" where it
    holds 1.0) and ``A/A`` (the same run's constant fan-in model against a copy of itself, its
    control). Empty in (or no N:M rows), empty out."""
    if nm.empty or "pattern" not in nm:
        return pd.DataFrame()
    frame = nm.copy()
    frame["model"] = _label(frame)
    keys = ["run_id", "model", "pattern", "batch"]
    aa = {
        tuple(r[k] for k in keys): interval_cell(r, "speedup")
        for r in frame[frame["backend"] == AA_BACKEND].to_dict("records")
    }
    rows = []
    for r in frame[frame["backend"] != AA_BACKEND].to_dict("records"):
        rows.append(
            {
                "machine": r.get("machine"),
                "model": r["model"],
                "pattern": f"{r['pattern']} ({float(r['sparsity']):.1%})",
                "N:M layers": r.get("nm_layers"),
                "batch": int(r["batch"]),
                "threads": r.get("threads"),
                "backend": r["backend"],
                "fan-in (ms)": r["dense_median_s"] * 1e3,
                "N:M (ms)": r["median_s"] * 1e3,
                "N:M vs fan-in": interval_cell(r, "speedup_vs_fan_in"),
                "A/A": aa.get(tuple(r[k] for k in keys), "-"),
                "run": r.get("run_id"),
            }
        )
    if not rows:
        return pd.DataFrame()
    order = ["machine", "model", "pattern", "batch", "threads", "backend", "run"]
    return pd.DataFrame(rows).sort_values(order, kind="stable").reset_index(drop=True)
