"""The report's speed tables: layer speed-ups with their intervals, the A/A control above each
table, one table per machine class; the same tables as text for the bench's log.

Every ratio in a table is one row's own paired measurement (``speedup`` and its interval, from
the row's ABBA blocks: :mod:`backends.timing`), or the quotient of two rows' paired speed-ups of
the SAME record and case (vs CSR, vs the best dense baseline): never times from two records.

A cell reads ``2.31 [2.20, 2.45]``; a speed-up whose interval holds 1.0 reads ``no measurable
difference [0.95, 1.08]``; a row of an older record, without an interval, reads
``2.31 (no interval)``. Records of different machine classes (``host.asv_name``, else the CPU
name and core count) never share a table.

Rows of the N:M comparison (``nm_pair`` set: :mod:`suite.bench.nm`) stay out of the layer grids
and make their own table, "N:M vs constant fan-in" (:func:`nm_table`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from backends.timing import AA_TOLERANCE, NO_DIFFERENCE, aa_noise, verdict

__all__ = [
    "AA_BACKEND",
    "aa_table",
    "add_speedups",
    "interval_cell",
    "layer_text",
    "machine_label",
    "machine_tables",
    "nm_rows",
    "nm_table",
    "plain_ratio",
    "speedup_cell",
    "speedup_grid",
]

AA_BACKEND = "dense_aa"
NO_INTERVAL = "no interval"
GRID_INDEX = ["device", "mode", "shape", "dtype", "threads", "batch", "sparsity"]


def machine_label(host: Mapping[str, Any] | None) -> str:
    """The machine class that made a record: ``asv_name (cpu)`` where the record has a machine
    identity, else ``unknown class: <cpu>, <n> cores`` (records older than the identity)."""
    host = host or {}
    cpu = host.get("cpu") or "unknown CPU"
    if host.get("asv_name"):
        return f"{host['asv_name']} ({cpu})"
    return f"unknown class: {cpu}, {host.get('cpu_count') or '?'} cores"


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame:
        return pd.to_numeric(frame[name], errors="coerce")
    return pd.Series(np.nan, index=frame.index, dtype=float)


def add_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Fill the speed-up columns of bench rows, old records included.

    ``speedup`` (the row's own, else ``dense_median_s / median_s``), ``speedup_ci_low`` /
    ``speedup_ci_high`` (NaN without an interval), ``verdict``, ``speedup_vs_dense`` (= speedup,
    for the figures), ``speedup_vs_csr`` (the row's own, else its own record's
    ``csr_median_s / median_s``) and ``speedup_vs_best_dense`` / ``best_dense`` (NaN / None
    where not measured).
    """
    frame = frame.copy()
    own = _column(frame, "speedup")
    frame["speedup"] = own.fillna(frame["dense_median_s"] / frame["median_s"])
    frame["speedup_ci_low"] = _column(frame, "speedup_ci_low")
    frame["speedup_ci_high"] = _column(frame, "speedup_ci_high")
    frame["verdict"] = [
        verdict(None if math.isnan(lo) else lo, None if math.isnan(hi) else hi)
        for lo, hi in zip(frame["speedup_ci_low"], frame["speedup_ci_high"])
    ]
    frame["speedup_vs_dense"] = frame["speedup"]
    csr_own = _column(frame, "csr_median_s") / frame["median_s"]
    frame["speedup_vs_csr"] = _column(frame, "speedup_vs_csr").fillna(csr_own)
    frame["speedup_vs_best_dense"] = _column(frame, "speedup_vs_best_dense")
    if "best_dense" not in frame:
        frame["best_dense"] = None
    _fill_from_same_record(frame)
    return frame


#: what one case of one record is: the rows a quotient of two speed-ups may combine
CASE_KEY = ["run_id", "device", "mode", "in_features", "out_features", "dtype", "threads",
            "batch", "sparsity"]  # fmt: skip


def _fill_from_same_record(frame: pd.DataFrame) -> None:
    """For rows of older records without them: vs CSR from the csr row, and vs the best dense
    baseline from the fastest ``dense*`` row, of the SAME record and case (never another
    record's times)."""
    keys = [k for k in CASE_KEY if k in frame]
    if "run_id" not in keys:
        return
    for _, case in frame.groupby(keys, sort=False, dropna=False):
        csr = case[case["backend"] == "csr"]
        if len(csr) == 1:
            idx = case.index[case["speedup_vs_csr"].isna()]
            frame.loc[idx, "speedup_vs_csr"] = case.loc[idx, "speedup"] / csr["speedup"].iloc[0]
        names = case["backend"].astype(str)
        dense = case[names.str.startswith("dense") & (names != AA_BACKEND)]
        todo = case.index[case["speedup_vs_best_dense"].isna()]
        if len(dense) and len(todo):
            best = dense.loc[dense["speedup"].idxmax()]
            frame.loc[todo, "speedup_vs_best_dense"] = case.loc[todo, "speedup"] / best["speedup"]
            frame.loc[todo, "best_dense"] = best["backend"]


def speedup_cell(est: float, low: float = math.nan, high: float = math.nan) -> str:
    """One speed-up as table text (see the module docstring)."""
    est, low, high = _number(est), _number(low), _number(high)
    if math.isnan(est):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{est:.2f} ({NO_INTERVAL})"
    if low <= 1.0 <= high:
        return f"{NO_DIFFERENCE} [{low:.2f}, {high:.2f}]"
    return f"{est:.2f} [{low:.2f}, {high:.2f}]"


def speedup_grid(bench: pd.DataFrame, value: str = "speedup") -> pd.DataFrame:
    """Wide table of one machine's rows: a row per (device, mode, shape, dtype, threads, batch,
    sparsity), a column per backend (A/A rows left out: they are shown above the table).

    ``value``: ``speedup``, ``speedup_vs_csr`` or ``speedup_vs_best_dense`` (quotients of two
    rows of one record); cells with the ``<value>_ci_low`` / ``_ci_high`` interval where the
    rows have one (:func:`speedup_cell`), else two decimals. The first column is the dense
    ``F.linear`` time in microseconds.
    """
    rows = bench[bench["backend"] != AA_BACKEND].copy()
    if rows.empty:
        return pd.DataFrame()
    low, high = _column(rows, f"{value}_ci_low"), _column(rows, f"{value}_ci_high")
    if value == "speedup" or low.notna().any():
        rows["cell"] = [
            speedup_cell(e, lo, hi) if not pd.isna(e) else "-"
            for e, lo, hi in zip(_column(rows, value), low, high)
        ]
    else:
        rows["cell"] = [plain_ratio(v) for v in rows[value]]
    wide = rows.pivot_table(index=GRID_INDEX, columns="backend", values="cell", aggfunc="first")
    wide = wide.loc[:, [c for c in wide.columns if (wide[c] != "-").any()]]
    dense_us = rows.groupby(GRID_INDEX)["dense_median_s"].median() * 1e6
    wide.insert(0, "dense (us)", dense_us.map("{:.1f}".format))
    wide.columns.name = None
    wide = wide.reset_index()
    wide["sparsity"] = wide["sparsity"].map(lambda s: f"{float(s):.0%}")
    return wide.fillna("-")


def limit_grid(bench: pd.DataFrame) -> pd.DataFrame:
    """Wide table of one machine's rows: achieved GFLOP/s and the percentage of the machine's
    limit (:mod:`suite.bench.roofline`: the FMA peak, or bandwidth x arithmetic intensity of the
    cache level the call's bytes fit in) per (device, mode, shape, dtype, threads, batch,
    sparsity) and backend, as ``"<GFLOP/s> (<pct>%)"``. Empty when no row has the fields
    (records from before the machine probe)."""
    if "pct_of_limit" not in bench or not bench["pct_of_limit"].notna().any():
        return pd.DataFrame()
    rows = bench[bench["pct_of_limit"].notna() & (bench["backend"] != AA_BACKEND)].copy()
    rows["cell"] = [f"{g:.1f} ({p:.0f}%)" for g, p in zip(rows["gflops"], rows["pct_of_limit"])]
    wide = rows.pivot_table(index=GRID_INDEX, columns="backend", values="cell", aggfunc="first")
    wide.columns.name = None
    wide = wide.reset_index()
    wide["sparsity"] = wide["sparsity"].map(lambda s: f"{float(s):.0%}")
    return wide.fillna("-")


def plain_ratio(value: Any) -> str:
    """A ratio without an interval as text (two decimals; ``-`` when missing)."""
    number = _number(value)
    return "-" if math.isnan(number) else f"{number:.2f}"


def aa_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The A/A rows of one machine's records: dense ``F.linear`` against a copy of itself per
    (record, shape, batch), with ``status`` ok or ``noisy: <reason>`` (interval missing 1.0 or
    wider than +-10%). Empty when the records have no A/A control (older records)."""
    aa = bench[bench["backend"] == AA_BACKEND]
    if aa.empty:
        return pd.DataFrame()
    out = []
    for r in aa.itertuples():
        low, high = _number(r.speedup_ci_low), _number(r.speedup_ci_high)
        reason = aa_noise(low, high) if not (math.isnan(low) or math.isnan(high)) else NO_INTERVAL
        out.append(
            {
                "run": r.run_id,
                "shape": r.shape,
                "sparsity": f"{float(r.sparsity):.0%}",
                "batch": r.batch,
                "A/A (dense vs dense)": f"{_number(r.speedup):.3f} [{low:.3f}, {high:.3f}]",
                "status": "ok" if reason is None else f"noisy: {reason}",
            }
        )
    return pd.DataFrame(out)


def nm_rows(bench: pd.DataFrame) -> pd.Series:
    """bool per row of ``bench``: the row belongs to an N:M comparison (``nm_pair`` set)."""
    if "nm_pair" not in bench:
        return pd.Series(False, index=bench.index)
    return bench["nm_pair"].notna()


def nm_table(bench: pd.DataFrame) -> pd.DataFrame:
    """The N:M comparison of one machine's rows: a row per (run, mode, shape, pattern, batch,
    threads, backend) with the N:M layer's speed-up over dense ``F.linear``, its constant fan-in
    partner's, and N:M over constant fan-in (the quotient of the two paired speed-ups of the
    same record and case), each with its 95% interval (:func:`speedup_cell`: "no measurable
    difference" where the interval holds 1.0). Empty without N:M rows."""
    if bench.empty or "pattern" not in bench:
        return pd.DataFrame()
    rows = bench[nm_rows(bench) & (bench["pattern"] == bench.get("nm_pair"))]
    rows = rows[rows["backend"] != AA_BACKEND]
    if rows.empty:
        return pd.DataFrame()
    out = []
    for r in rows.to_dict("records"):
        out.append(
            {
                "mode": r.get("mode"),
                "shape": f"{r['in_features']}->{r['out_features']}",
                "pattern": f"{r['pattern']} ({float(r['sparsity']):.1%})",
                "batch": int(r["batch"]),
                "threads": r.get("threads"),
                "backend": r["backend"],
                "N:M vs dense": interval_cell(r, "speedup"),
                "fan-in vs dense": interval_cell(r, "fan_in_speedup"),
                "N:M vs fan-in": interval_cell(r, "speedup_vs_fan_in"),
                "run": r.get("run_id"),
            }
        )
    table = pd.DataFrame(out)
    keys = ["mode", "shape", "pattern", "batch", "threads", "backend", "run"]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def interval_cell(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` with its ``_ci_low`` / ``_ci_high`` as a cell (``-`` where missing)."""
    return speedup_cell(row.get(key), row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high"))


def machine_tables(bench: pd.DataFrame) -> list[dict[str, Any]]:
    """One entry per machine class in ``bench`` (a frame with a ``machine`` column): ``machine``,
    ``aa`` (:func:`aa_table` or None, the N:M cases' A/A rows included), ``noisy`` (count of
    noisy A/A rows), ``vs_dense``, ``vs_best_dense`` and ``vs_csr`` (:func:`speedup_grid` of the
    rows outside the N:M comparison, None where not measured), ``limits`` (:func:`limit_grid`
    or None), ``nm`` (:func:`nm_table` or None) and ``has_nm`` (whether it is a table)."""
    out = []
    for machine, everything in bench.groupby("machine", sort=True):
        aa = aa_table(everything)
        noisy = int(aa["status"].str.startswith("noisy").sum()) if not aa.empty else 0
        entry: dict[str, Any] = {"machine": machine, "aa": None if aa.empty else aa}
        entry["noisy"] = noisy
        nm = nm_table(everything)
        entry["nm"] = None if nm.empty else nm
        entry["has_nm"] = not nm.empty
        group = everything[~nm_rows(everything)]
        entry["vs_dense"] = speedup_grid(group)
        limits = limit_grid(group)
        entry["limits"] = None if limits.empty else limits
        for key, col in (("vs_best_dense", "speedup_vs_best_dense"), ("vs_csr", "speedup_vs_csr")):
            has = group[col].notna().any() if col in group else False
            entry[key] = speedup_grid(group, col) if has else None
        if "best_dense" in group and group["best_dense"].notna().any():
            entry["best_dense"] = ", ".join(sorted(set(group["best_dense"].dropna())))
        else:
            entry["best_dense"] = None
        out.append(entry)
    return out


def layer_text(rows: Sequence[Mapping[str, Any]], machine: str = "this machine") -> str:
    """The layer tables of one bench run as text (the bench's log): A/A control, speed-ups vs
    dense ``F.linear`` with intervals, vs the best dense baseline, vs CSR."""
    from suite.report.render import markdown_table

    if not rows:
        return "(no rows)"
    frame = pd.DataFrame([dict(r) for r in rows])
    frame["run_id"] = "this run"
    frame["device"] = frame["device"] if "device" in frame else "cpu"
    frame["shape"] = frame["in_features"].astype(str) + "->" + frame["out_features"].astype(str)
    frame["machine"] = machine
    parts = []
    for entry in machine_tables(add_speedups(frame)):
        parts.append(f"machine: {entry['machine']}")
        if entry["aa"] is not None:
            parts.append(
                f"A/A control (noisy beyond +-{AA_TOLERANCE:.0%}):\n" + markdown_table(entry["aa"])
            )
        if len(entry["vs_dense"]):
            parts.append(
                "speed-up vs dense F.linear [95% CI]:\n" + markdown_table(entry["vs_dense"])
            )
        for key, title in (
            ("vs_best_dense", f"speed-up vs the best dense baseline ({entry['best_dense']})"),
            ("vs_csr", "speed-up vs csr"),
        ):
            if entry[key] is not None:
                parts.append(f"{title}:\n" + markdown_table(entry[key]))
        if entry["nm"] is not None:
            parts.append("N:M vs constant fan-in [95% CI]:\n" + markdown_table(entry["nm"]))
    return "\n\n".join(parts)
