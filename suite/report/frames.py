"""Result records -> pandas frames and the summaries the report shows.

Everything here is pure data: no files are written and nothing is plotted. The report
(:mod:`suite.report`) renders these frames as Markdown and :mod:`suite.report.figures` plots them.

Conventions:

- A train run's *method* is ``config.trainer.label``; a ``dense`` run is the reference of its
  experiment whatever sparsity its config carries, so its sparsity is set to 0.
- A cell is the set of seeds of one experiment-defining config (``cell_id``: the run id
  without the seed, see :func:`suite.results.cell_id`); records of other settings never join or
  replace it (:func:`select_cells`). A seed run twice with the same config counts once: the
  record created last wins.
- Standard deviations are sample standard deviations (ddof=1) over seeds; with one seed the
  std is missing (NaN), never 0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from suite.report import claims, speed

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
DENSE = "dense"
# The usual reading order of methods in tables; unknown methods follow alphabetically.
METHOD_ORDER = (
    "dense",
    "static",
    "set",
    "rigl",
    "rigl_sparse_init",
    "srigl",
    "srigl_no_ablation",
    "rigl_uniform",
    "srigl_uniform",
    "srigl_fan_in",
    "nm_2_4_rigl",
    "nm_1_4_rigl",
    "nm_1_8_rigl",
)
BENCH_KEY = (
    "device",
    "mode",
    "in_features",
    "out_features",
    "dtype",
    "threads",
    "batch",
    "sparsity",
    "backend",
)
ABLATION_PAIR = ("srigl", "srigl_no_ablation")
HEADLINE_METHODS = ("dense", "rigl", "rigl_sparse_init", "srigl")
HEADLINE_SPARSITY = 0.9
ABLATION_MIN_SPARSITY = 0.95


def get_path(mapping: Any, dotted: str, default: Any = None) -> Any:
    """``mapping["a"]["b"]`` for ``dotted="a.b"``; ``default`` where a level is missing."""
    node = mapping
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _name_of(value: Any) -> Any:
    """A config group rendered as its name: ``{"label": "srigl", ...}`` -> ``"srigl"``."""
    if isinstance(value, Mapping):
        for key in ("label", "name"):
            if key in value:
                return value[key]
        return None
    return value


def method_sort_key(method: str) -> tuple[int, str]:
    """Sort key putting the methods of :data:`METHOD_ORDER` first, in that order."""
    try:
        return (METHOD_ORDER.index(method), "")
    except ValueError:
        return (len(METHOD_ORDER), str(method))


def sparsity_label(sparsity: float) -> str:
    """``0.95 -> "95%"``, ``0.0 -> "0% (dense)"``."""
    if sparsity == 0:
        return "0% (dense)"
    return f"{sparsity * 100:g}%"


def format_accuracy(mean: float, std: float, n: int, density: float | None = None) -> str:
    """``"95.11 ± 0.12 (n=5), density 9.90%"``: :func:`format_mean_std` and the measured
    density (mean over the seeds; left out where the records carry none)."""
    text = format_mean_std(mean, std, n)
    if text == "-" or density is None or (isinstance(density, float) and math.isnan(density)):
        return text
    return f"{text}, density {claims.format_density(density)}"


def format_mean_std(mean: float, std: float, n: int) -> str:
    """``"95.11 ± 0.12 (n=5)"``; the std is left out when it is missing (one seed)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.2f} (n={int(n)})"
    return f"{mean:.2f} ± {std:.2f} (n={int(n)})"


# --------------------------------------------------------------------------- train records


def train_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per train record, before de-duplication.

    Columns: ``record`` (position in ``records``), run_id, created (UTC timestamp),
    experiment, method, sparsity (float, 0 for dense), seed, dataset, model, top1, top5,
    density (the measured ``metrics.global_density`` of the sparse layers; NaN where the
    record has none), step_time_s, git_commit, cell_id, settings_id (:mod:`suite.results`),
    file (the record's file name in its store).
    """
    from suite.results import ResultStore, cell_id, settings_id

    names = ResultStore(".")
    rows = []
    for i, rec in enumerate(records):
        if rec.get("kind") != "train":
            continue
        cfg, met = rec["config"], rec["metrics"]
        density = met.get("global_density")
        method = _name_of(cfg.get("trainer"))
        sparsity = 0.0 if method == DENSE else float(cfg.get("sparsity") or 0.0)
        rows.append(
            {
                "record": i,
                "run_id": rec["run_id"],
                "created": rec["created"],
                "experiment": _name_of(cfg.get("experiment")),
                "method": method,
                "sparsity": sparsity,
                "seed": cfg.get("seed"),
                "dataset": _name_of(cfg.get("dataset")),
                "model": _name_of(cfg.get("model")),
                "top1": float(met["top1_accuracy"]),
                "top5": met.get("top5_accuracy"),
                "density": float(density) if isinstance(density, (int, float)) else math.nan,
                "step_time_s": met.get("step_time_s"),
                "git_commit": get_path(rec, "git.commit"),
                "cell_id": cell_id(cfg),
                "settings_id": settings_id(cfg),
                "file": names.path_for(rec).name,
            }
        )
    columns = [
        "record",
        "run_id",
        "created",
        "experiment",
        "method",
        "sparsity",
        "seed",
        "dataset",
        "model",
        "top1",
        "top5",
        "density",
        "step_time_s",
        "git_commit",
        "cell_id",
        "settings_id",
        "file",
    ]
    frame = pd.DataFrame(rows, columns=columns)
    frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
    return frame


def dedupe_latest(frame: pd.DataFrame, key: Iterable[str]) -> tuple[pd.DataFrame, int]:
    """Keep the row created last for every ``key``; return ``(kept, number dropped)``.

    Rows whose key holds a missing value are compared as equal to each other (NaN == NaN).
    """
    key = list(key)
    if frame.empty:
        return frame, 0
    ordered = frame.sort_values("created", kind="stable")
    kept = ordered.drop_duplicates(subset=key, keep="last").sort_index()
    return kept, len(frame) - len(kept)


def accuracy_summary(train: pd.DataFrame) -> pd.DataFrame:
    """Mean, std (ddof=1) and n of top-1 accuracy, and the mean measured density, per
    (experiment, method, sparsity).

    Args:
        train: de-duplicated :func:`train_frame`.

    Returns:
        Columns experiment, method, sparsity, mean, std, n, density; sorted by experiment,
        method order and sparsity.
    """
    cols = ["experiment", "method", "sparsity", "mean", "std", "n", "density"]
    if train.empty:
        return pd.DataFrame(columns=cols)
    if "density" not in train:
        train = train.assign(density=math.nan)
    out = (
        train.groupby(["experiment", "method", "sparsity"], dropna=False)
        .agg(
            mean=("top1", "mean"),
            std=("top1", "std"),
            n=("top1", "count"),
            density=("density", "mean"),
        )
        .reset_index()
    )
    return sort_methods(out)


def sort_methods(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows sorted by experiment, :data:`METHOD_ORDER` and sparsity (the columns present)."""
    order = frame["method"].map(lambda m: method_sort_key(m)[0])
    name = frame["method"].astype(str)
    cols = [c for c in ("experiment",) if c in frame]
    tmp = frame.assign(_o=order, _n=name)
    by = cols + ["_o", "_n"] + [c for c in ("sparsity",) if c in frame]
    return tmp.sort_values(by, kind="stable").drop(columns=["_o", "_n"]).reset_index(drop=True)


def load_reference(name: str = "accuracy.csv") -> pd.DataFrame:
    """A reference CSV of :data:`REFERENCE_DIR` (the paper's figures) as a frame."""
    return pd.read_csv(REFERENCE_DIR / name)


def accuracy_table(
    summary: pd.DataFrame, experiment: str, reference: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Wide table of one experiment: a row per method, a column per sparsity.

    Cells read ``"mean ± std (n=N), density D%"`` (:func:`format_accuracy`). Rows
    ``paper: <method>`` follow with the reference figures when ``reference`` holds rows of
    the same experiment.
    """
    ours = summary[summary["experiment"] == experiment]
    ref = (
        reference[reference["experiment"] == experiment]
        if reference is not None
        else pd.DataFrame(columns=["method", "sparsity", "top1"])
    )
    sparsities = sorted(set(ours["sparsity"]) | set(ref["sparsity"].astype(float)))
    rows = []
    for method, grp in sort_methods(ours).groupby("method", sort=False):
        cells = {sparsity_label(s): "" for s in sparsities}
        for r in grp.itertuples():
            cells[sparsity_label(r.sparsity)] = format_accuracy(r.mean, r.std, r.n, r.density)
        rows.append({"method": method, **cells})
    for method, grp in sort_methods(ref).groupby("method", sort=False):
        cells = {sparsity_label(s): "" for s in sparsities}
        for r in grp.itertuples():
            cells[sparsity_label(float(r.sparsity))] = f"{r.top1:.2f}"
        rows.append({"method": f"paper: {method}", **cells})
    return pd.DataFrame(rows, columns=["method"] + [sparsity_label(s) for s in sparsities])


def headline_accuracy(
    summary: pd.DataFrame, methods: Sequence[str] = HEADLINE_METHODS
) -> pd.DataFrame:
    """SRigL vs RigL vs dense: a row per (experiment, sparsity), a column per method of
    ``methods`` present (dense, the reference, repeated on every row); cells
    "mean ± std (n=N), density D%" (:func:`format_accuracy`)."""
    present = [m for m in methods if m in set(summary["method"])]
    rows = []
    for exp, grp in summary.groupby("experiment", sort=True):
        dense = grp[grp["method"] == DENSE]
        # the sparsities of the headline's own sparse methods (other methods' sparsities, e.g.
        # N:M's 50%, would only add rows of dashes)
        shown = grp["method"].isin(present) & (grp["method"] != DENSE)
        sparsities = sorted(set(grp.loc[shown, "sparsity"]))
        for sp in sparsities:
            row: dict[str, Any] = {"experiment": exp, "sparsity": sparsity_label(sp)}
            for method in present:
                hit = (
                    dense
                    if method == DENSE
                    else grp[(grp["method"] == method) & (grp["sparsity"] == sp)]
                )
                first = hit.iloc[0] if len(hit) else None
                row[method] = (
                    format_accuracy(first["mean"], first["std"], first["n"], first["density"])
                    if first is not None
                    else "-"
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=["experiment", "sparsity", *present])


def headline_speed(bench: pd.DataFrame, sparsity: float = HEADLINE_SPARSITY) -> pd.DataFrame:
    """The fastest condensed backend per (machine, device, mode, shape, threads, batch) at
    ``sparsity``, with its paired speed-up vs dense ``F.linear`` [95% CI], vs the best dense
    baseline and vs CSR of the same record (the paper's headline compares at 90%)."""
    condensed = ~bench["backend"].astype(str).str.startswith(DENSE)
    sub = bench[condensed & ((bench["sparsity"] - sparsity).abs() < 1e-9)]
    if sub.empty:
        return pd.DataFrame()
    keys = ["machine", "device", "mode", "shape", "threads", "batch"]
    best = sub.loc[sub.groupby(keys)["speedup"].idxmax()]
    out = best[keys + ["backend"]].copy()
    out.insert(5, "sparsity", sparsity_label(sparsity))
    out["vs dense [95% CI]"] = [
        speed.speedup_cell(e, lo, hi)
        for e, lo, hi in zip(best["speedup"], best["speedup_ci_low"], best["speedup_ci_high"])
    ]
    for title, key in (("vs best dense", "speedup_vs_best_dense"), ("vs csr", "speedup_vs_csr")):
        low = best.get(f"{key}_ci_low", pd.Series(np.nan, index=best.index))
        high = best.get(f"{key}_ci_high", pd.Series(np.nan, index=best.index))
        out[title] = [
            speed.plain_ratio(v) if pd.isna(lo) else speed.speedup_cell(v, lo, hi)
            for v, lo, hi in zip(best[key], low, high)
        ]
    return out.rename(columns={"backend": "fastest backend"}).reset_index(drop=True)


def reference_table(reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's accuracy figures as a wide table: (experiment, method) x sparsity."""
    if reference.empty:
        return reference
    ref = sort_methods(reference.assign(sparsity=reference["sparsity"].astype(float)))
    sparsities = sorted(ref["sparsity"].unique())
    rows = []
    for (exp, method), grp in ref.groupby(["experiment", "method"], sort=False):
        cells = {sparsity_label(s): "" for s in sparsities}
        for r in grp.itertuples():
            cells[sparsity_label(r.sparsity)] = f"{r.top1:.2f}"
        first = grp.iloc[0]
        rows.append(
            {
                "experiment": exp,
                "dataset": first["dataset"],
                "model": first["model"],
                "method": method,
                **cells,
                "source": "; ".join(dict.fromkeys(grp["source"])),
            }
        )
    return pd.DataFrame(rows)


def ablation_table(
    train: pd.DataFrame,
    pair: tuple[str, str] = ABLATION_PAIR,
    min_sparsity: float = ABLATION_MIN_SPARSITY,
) -> pd.DataFrame:
    """Does neuron ablation help? ``pair[0]`` vs ``pair[1]`` at sparsities >= ``min_sparsity``.

    The difference is taken per seed (seeds present for both methods), then summarised as
    mean ± std (ddof=1) over those seeds, with its 95% t-interval and the verdict of
    :func:`suite.report.claims.paired_difference` (the same statistics as every claim).

    Returns:
        Columns experiment, sparsity, <pair[0]>, <pair[1]> (top-1 with the measured density),
        difference, 95% CI, n_pairs, verdict (text cells) plus the numeric diff_mean and
        diff_std.
    """
    with_abl, without = pair
    cols = [
        "experiment",
        "sparsity",
        with_abl,
        without,
        "difference",
        "95% CI",
        "n_pairs",
        "verdict",
    ]
    sub = train[train["method"].isin(pair) & (train["sparsity"] >= min_sparsity - 1e-9)]
    if "density" not in sub:
        sub = sub.assign(density=math.nan)
    rows = []
    for (exp, sp), grp in sub.groupby(["experiment", "sparsity"]):
        a = grp[grp["method"] == with_abl].set_index("seed")
        b = grp[grp["method"] == without].set_index("seed")
        if a.empty or b.empty:
            continue
        paired = claims.paired_difference(a["top1"], b["top1"])
        common = a.index.intersection(b.index)
        diffs = (a.loc[common, "top1"] - b.loc[common, "top1"]).to_numpy(dtype=float)
        std = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
        interval = "-" if math.isnan(paired.low) else f"[{paired.low:+.2f}, {paired.high:+.2f}]"
        rows.append(
            {
                "experiment": exp,
                "sparsity": sparsity_label(sp),
                with_abl: format_accuracy(
                    a["top1"].mean(), a["top1"].std(), len(a), a["density"].mean()
                ),
                without: format_accuracy(
                    b["top1"].mean(), b["top1"].std(), len(b), b["density"].mean()
                ),
                "difference": format_mean_std(paired.mean, std, paired.n) if paired.n else "-",
                "95% CI": interval,
                "n_pairs": paired.n,
                "verdict": paired.verdict,
                "diff_mean": paired.mean,
                "diff_std": std,
            }
        )
    return pd.DataFrame(rows, columns=cols + ["diff_mean", "diff_std"])


def size_table(records: Sequence[Mapping[str, Any]], train: pd.DataFrame) -> pd.DataFrame:
    """Parameters, inference FLOPs and model size per (experiment, method, sparsity).

    Means over seeds of ``metrics.params``, ``metrics.flops``, ``metrics.model_bytes`` (every
    key present; bytes shown in kB) and ``metrics.global_density``. Missing metrics are
    missing columns, not errors.
    """
    rows = []
    for r in train.itertuples():
        met = records[r.record]["metrics"]
        row: dict[str, Any] = {
            "experiment": r.experiment,
            "method": r.method,
            "sparsity": r.sparsity,
        }
        if isinstance(met.get("global_density"), (int, float)):
            row["density"] = float(met["global_density"])
        for group, unit, scale in (("params", "", 1.0), ("flops", " (M)", 1e-6)):
            for key, value in (met.get(group) or {}).items():
                if isinstance(value, (int, float)):
                    row[f"{group} {key}{unit}"] = value * scale
        for key, value in (met.get("model_bytes") or {}).items():
            if isinstance(value, (int, float)):
                row[f"size {key} (kB)"] = value / 1e3
        rows.append(row)
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows)
    value_cols = sorted(
        (c for c in frame.columns if c not in ("experiment", "method", "sparsity")),
        key=_size_column_rank,
    )
    out = frame.groupby(["experiment", "method", "sparsity"]).mean(numeric_only=True)
    out = sort_methods(out.reset_index())
    out["sparsity"] = out["sparsity"].map(sparsity_label)
    return out[["experiment", "method", "sparsity"] + [c for c in value_cols if c in out]]


def _size_column_rank(column: str) -> tuple[int, int, str]:
    """density, params, flops, size; within each: dense, sparse/nonzero, condensed, others."""
    group = next(
        (i for i, g in enumerate(("density", "params", "flops", "size")) if column.startswith(g)), 4
    )
    kind = next(
        (i for i, k in enumerate(("dense", "nonzero", "sparse", "condensed")) if f" {k}" in column),
        4,
    )
    return (group, kind, column)


def ablation_curves(records: Sequence[Mapping[str, Any]], train: pd.DataFrame) -> pd.DataFrame:
    """Ablated neurons over training: one row per (run, topology update).

    Columns experiment, method, sparsity, seed, ablating (the run's ``trainer.ablation``
    flag, None where the config has none), step, n_ablated; only runs whose record has a
    non-empty ``metrics.ablation`` list.
    """
    rows = []
    for r in train.itertuples():
        flag = get_path(records[r.record]["config"], "trainer.ablation")
        for entry in records[r.record]["metrics"].get("ablation") or []:
            if not isinstance(entry, Mapping) or "step" not in entry:
                continue
            rows.append(
                {
                    "experiment": r.experiment,
                    "method": r.method,
                    "sparsity": r.sparsity,
                    "seed": r.seed,
                    "ablating": flag,
                    "step": entry["step"],
                    "n_ablated": entry.get("n_ablated", 0),
                }
            )
    return pd.DataFrame(
        rows,
        columns=["experiment", "method", "sparsity", "seed", "ablating", "step", "n_ablated"],
    )


# --------------------------------------------------------------------------- cells


def select_cells(train: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split :func:`train_frame` rows into ``(tabled, other)``; a cell never mixes settings.

    A cell is the set of seeds of one experiment-defining config (``cell_id``: the run id
    without the seed). Per experiment, the tables show one set of settings (``settings_id``:
    epochs, batch size, optimizer...; the one with the most records, ties to the newest); within
    it, per (method, sparsity), the cell with the most seeds (ties to the newest). Every other
    row is ``other``: reported separately, it never replaces or joins a tabled cell. A seed run
    twice with the same config (same cell) counts once, the newest record wins.

    Returns:
        ``(tabled, other)``, both with the columns of :func:`train_frame`.
    """
    if train.empty:
        return train, train.iloc[0:0]
    train, _ = dedupe_latest(train, ("cell_id", "seed"))
    keep: set[Any] = set()
    for _, exp in train.groupby("experiment", dropna=False, sort=False):
        settings = exp.groupby("settings_id")["created"].agg(["size", "max"])
        best = settings.sort_values(["size", "max"], ascending=False).index[0]
        same = exp[exp["settings_id"] == best]
        for _, group in same.groupby(["method", "sparsity"], dropna=False, sort=False):
            cells = group.groupby("cell_id")["created"].agg(["size", "max"])
            keep.add(cells.sort_values(["size", "max"], ascending=False).index[0])
    tabled = train["cell_id"].isin(keep)
    return train[tabled], train[~tabled]


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def config_difference(config: Mapping[str, Any], reference: Mapping[str, Any]) -> str:
    """``"training.epochs=1 (10); lr=0.1 (0.05)"``: keys of ``config`` that differ from
    ``reference`` (the reference's value in brackets, ``-`` where it has none)."""
    a, b = flatten(config), flatten(reference)
    parts = [
        f"{k}={a.get(k, '-')} ({b.get(k, '-')})"
        for k in sorted(set(a) | set(b))
        if a.get(k, _NONE) != b.get(k, _NONE)
    ]
    return "; ".join(parts) or "(none)"


_NONE = object()


def other_settings_table(
    records: Sequence[Mapping[str, Any]], tabled: pd.DataFrame, other: pd.DataFrame
) -> pd.DataFrame:
    """The ``other`` cells of :func:`select_cells`, one row per cell: experiment, method,
    sparsity, top-1 (mean ± std (n)), what differs from the tables (vs the tabled cell of the
    same experiment, method and sparsity, else any tabled cell of the experiment) and files;
    top-1 with the measured density (:func:`format_accuracy`)."""
    from suite.results import cell_config

    cols = ["experiment", "method", "sparsity", "top-1", "differs from the tables", "files"]
    rows = []
    for _, grp in other.groupby("cell_id", sort=False):
        first = grp.iloc[0]
        same = tabled[
            (tabled["experiment"] == first["experiment"])
            & (tabled["method"] == first["method"])
            & (tabled["sparsity"] == first["sparsity"])
        ]
        ref_rows = same if len(same) else tabled[tabled["experiment"] == first["experiment"]]
        mine = cell_config(records[int(first["record"])]["config"])
        diff = (
            config_difference(mine, cell_config(records[int(ref_rows.iloc[0]["record"])]["config"]))
            if len(ref_rows)
            else "(no tabled cell of this experiment)"
        )
        rows.append(
            {
                "experiment": first["experiment"],
                "method": first["method"],
                "sparsity": sparsity_label(first["sparsity"]),
                "top-1": format_accuracy(
                    grp["top1"].mean(),
                    grp["top1"].std(),
                    len(grp),
                    grp["density"].mean() if "density" in grp else None,
                ),
                "differs from the tables": diff,
                "files": ", ".join(sorted(grp["file"])),
            }
        )
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- bench records


def bench_frame(records: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, int]:
    """Every bench row with speed-ups; repeated measurements keep the latest record's row.

    Adds columns run_id, created, device (row's ``device``, default ``cpu``), shape
    (``"in->out"``), machine (:func:`suite.report.speed.machine_label` of the record's host) and
    the speed-up columns of :func:`suite.report.speed.add_speedups` (each from the row's own
    record: never a time of another record).

    Returns:
        ``(frame, number of superseded rows dropped)``.
    """
    rows = []
    for rec in records:
        if rec.get("kind") != "bench":
            continue
        machine = speed.machine_label(rec.get("host"))
        for row in rec["metrics"]["rows"]:
            out = dict(row)
            out["run_id"] = rec["run_id"]
            out["created"] = rec["created"]
            out["device"] = row.get("device") or "cpu"
            out["machine"] = machine
            rows.append(out)
    if not rows:
        return pd.DataFrame(), 0
    frame = pd.DataFrame(rows)
    frame["created"] = pd.to_datetime(frame["created"], utc=True, format="ISO8601")
    # an N:M row and its constant fan-in partner share the BENCH_KEY: the pair and the row's
    # pattern tell them apart (None for every other row, old records included)
    frame["nm_key"] = None
    if "nm_pair" in frame:
        nm = frame["nm_pair"]
        frame["nm_key"] = nm.where(nm.isna(), nm.astype(str) + "/" + frame["pattern"].astype(str))
    frame, dropped = dedupe_latest(frame, ("machine", *BENCH_KEY, "nm_key"))
    frame = frame.drop(columns="nm_key")
    frame = frame.reset_index(drop=True)
    frame["shape"] = frame["in_features"].astype(str) + "->" + frame["out_features"].astype(str)
    return speed.add_speedups(frame), dropped


def speedup_table(bench: pd.DataFrame, value: str = "speedup_vs_dense") -> pd.DataFrame:
    """Wide table: a row per (device, mode, shape, dtype, threads, batch, sparsity), a column
    per backend holding ``value``; the first value column is the dense time in microseconds
    (median over the rows: the bench times dense again next to every backend)."""
    index = ["device", "mode", "shape", "dtype", "threads", "batch", "sparsity"]
    wide = bench.pivot_table(index=index, columns="backend", values=value, aggfunc="first")
    wide = wide.dropna(axis=1, how="all")
    dense_us = bench.groupby(index)["dense_median_s"].median() * 1e6
    wide.insert(0, "dense (us)", dense_us)
    wide.columns.name = None
    wide = wide.reset_index()
    wide["sparsity"] = wide["sparsity"].map(sparsity_label)
    return wide


def layer_timing_comparison(bench: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's layer timing (SPEC.md section 4) next to ours for the same shape and batch.

    One row per (source, sparsity): the time in microseconds per backend and the speed-up of
    every sparse backend vs that source's dense time. Ours are the CPU rows at the reference's
    shape and batch in end_to_end mode (``layer(x)``, like the paper's; kernel mode where
    there is none), every thread count measured, labelled.
    """
    rows = []
    for sp, grp in reference.groupby("sparsity"):
        times = dict(zip(grp["backend"], grp["time_us"]))
        first = grp.iloc[0]
        row = {"source": f"paper ({first['threads']} threads)", "sparsity": sparsity_label(sp)}
        row.update({f"{b} (us)": t for b, t in times.items()})
        dense = times.get("dense")
        row.update({f"{b} speed-up": dense / t for b, t in times.items() if b != "dense"})
        rows.append(row)
    if not bench.empty:
        ref0 = reference.iloc[0]
        mine = bench[
            (bench["in_features"] == ref0["in_features"])
            & (bench["out_features"] == ref0["out_features"])
            & (bench["batch"] == ref0["batch"])
            & (bench["device"] == "cpu")
        ]
        modes = set(mine["mode"])
        mine = mine[mine["mode"] == ("end_to_end" if "end_to_end" in modes else "kernel")]
        mine = mine[mine["backend"] != speed.AA_BACKEND]
        for (machine, threads, sp), grp in mine.groupby(["machine", "threads", "sparsity"]):
            row = {"source": f"ours ({machine}, {threads} threads)", "sparsity": sparsity_label(sp)}
            row["dense (us)"] = float(grp["dense_median_s"].median()) * 1e6
            for r in grp[grp["backend"] != DENSE].itertuples():
                row[f"{r.backend} (us)"] = r.median_s * 1e6
                row[f"{r.backend} speed-up"] = r.speedup_vs_dense
            rows.append(row)
    frame = pd.DataFrame(rows)
    time_cols = sorted(c for c in frame.columns if c.endswith("(us)") and c != "dense (us)")
    speed_cols = sorted(c for c in frame.columns if c.endswith("speed-up"))
    return frame[["source", "sparsity", "dense (us)"] + time_cols + speed_cols]


def _metric_rows(records: Sequence[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """``metrics[key]`` of every bench record as rows (a list of dicts, or a dict of dicts keyed
    by a name), each with the record's ``run_id`` and ``machine``."""
    rows = []
    for rec in records:
        if rec.get("kind") != "bench":
            continue
        found = rec["metrics"].get(key)
        if isinstance(found, Mapping):
            items = [
                {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "value": v}
                for k, v in found.items()
            ]
        elif isinstance(found, list):
            items = [w for w in found if isinstance(w, Mapping)]
        else:
            items = []
        for item in items:
            machine = speed.machine_label(rec.get("host"))
            rows.append({"run_id": rec["run_id"], "machine": machine, **item})
    return rows


def whole_model_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``metrics.whole_model`` of every bench record as rows (:func:`_metric_rows`), with a
    ``speedup_vs_dense`` column (the row's paired ``speedup``, else dense_median_s / median_s of
    the same row)."""
    frame = pd.DataFrame(_metric_rows(records, "whole_model"))
    if {"median_s", "dense_median_s"} <= set(frame.columns):
        ratio = frame["dense_median_s"] / frame["median_s"]
        own = pd.to_numeric(frame["speedup"], errors="coerce") if "speedup" in frame else ratio * 0
        frame["speedup_vs_dense"] = own.fillna(ratio) if "speedup" in frame else ratio
    return frame


def nm_whole_model_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``metrics.nm_whole_model`` of every bench record as rows (:mod:`suite.bench.
    nm_whole_model`: whole models condensed with N:M vs constant fan-in masks)."""
    return pd.DataFrame(_metric_rows(records, "nm_whole_model"))


WHOLE_MODEL_COLUMNS = (
    "model",
    "name",
    "backend",
    "structured",
    "device",
    "dtype",
    "threads",
    "batch",
    "sparsity",
    "condensed_weight_fraction",
    "dense (ms)",
    "backend (ms)",
    "speedup_vs_dense",
)


def whole_model_display(whole: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`whole_model_frame` worth reading, times in milliseconds."""
    frame = whole.copy()
    if "dense_median_s" in frame:
        frame["dense (ms)"] = frame["dense_median_s"] * 1e3
    if "median_s" in frame:
        frame["backend (ms)"] = frame["median_s"] * 1e3
    cols = [c for c in WHOLE_MODEL_COLUMNS if c in frame.columns]
    return frame[cols] if len(cols) > 2 else whole


def skipped_frame(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``metrics.skipped`` of every bench record (what the bench could not run, and why)."""
    rows = []
    for rec in records:
        if rec.get("kind") != "bench":
            continue
        skipped = rec["metrics"].get("skipped") or []
        if isinstance(skipped, Mapping):
            skipped = [{"what": k, "reason": v} for k, v in skipped.items()]
        for item in skipped:
            entry = dict(item) if isinstance(item, Mapping) else {"reason": item}
            rows.append({"run_id": rec["run_id"], **entry})
    frame = pd.DataFrame(rows)
    return frame.drop_duplicates().reset_index(drop=True) if not frame.empty else frame


# --------------------------------------------------------------------------- provenance


def machine_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Distinct machines (CPU, cores, threads, GPU, platform) with their record counts."""
    rows = [
        {
            "kind": rec["kind"],
            "cpu": get_path(rec, "host.cpu"),
            "cores": get_path(rec, "host.cpu_count"),
            "threads": get_path(rec, "host.threads"),
            "gpu": get_path(rec, "host.gpu") or "none",
            "platform": get_path(rec, "host.platform"),
        }
        for rec in records
    ]
    return _count_distinct(rows)


def host_check_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Per bench record: its load average and the cores the host gave at the start and the end
    (``core_scaling``: a ``threads``-thread matmul's speed over its 1-thread speed; near
    ``threads`` when the host gave every core, "-" in records from before it was measured) and
    the steal fraction; ``noisy`` says whether the run flagged itself (A/A or cores)."""

    def snap(rec: Mapping[str, Any], when: str, key: str) -> Any:
        value = get_path(rec, f"host.load_{when}.{key}")
        return "-" if value is None else value

    rows = [
        {
            "record": rec.get("_path") and Path(rec["_path"]).name or rec["run_id"],
            "commit": (get_path(rec, "git.commit") or "unknown")[:7],
            "threads": get_path(rec, "metrics.threads"),
            "load start / end": f"{snap(rec, 'start', 'load_avg_1m')} / "
            f"{snap(rec, 'end', 'load_avg_1m')}",
            "cores given start / end": f"{snap(rec, 'start', 'core_scaling')} / "
            f"{snap(rec, 'end', 'core_scaling')}",
            "steal": get_path(rec, "host.steal_fraction"),
            "noisy": get_path(rec, "metrics.noisy"),
        }
        for rec in records
        if rec.get("kind") == "bench"
    ]
    return pd.DataFrame(rows)


def versions_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Distinct library-version sets with their record counts."""
    rows = [{k: (v or "-") for k, v in rec.get("versions", {}).items()} for rec in records]
    return _count_distinct(rows)


def git_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The git commits (and dirty flags) the records came from, with counts per kind."""
    rows = [
        {
            "commit": (get_path(rec, "git.commit") or "unknown")[:12],
            "dirty": get_path(rec, "git.dirty"),
            "kind": rec["kind"],
        }
        for rec in records
    ]
    return _count_distinct(rows)


def _count_distinct(rows: list[dict[str, Any]]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame()
    frame = pd.DataFrame(rows).astype(str)
    cols = list(frame.columns)
    return frame.groupby(cols, sort=True).size().reset_index(name="records")
