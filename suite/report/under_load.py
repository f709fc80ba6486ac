"""The report's "fused under load" table, from the records of ``python -m suite.bench
under-load`` (``results/load/load-*.json``, :mod:`suite.bench.under_load`).

One table per machine class, from that class's newest record: per layer, fused's quiet and
loaded times, the slowdown (loaded / quiet, paired in one run) with its 95% interval against
the target, dense ``F.linear``'s slowdown, fused's speed-up over dense under load, the A/A
control (quiet against quiet) and the parallel paths the loaded blocks ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from suite.report.side_records import load_side_records, ratio_cell
from suite.report.side_records import newest_per_machine as side_newest

COLUMNS = [
    "layer",
    "sparsity",
    "batch",
    "fused quiet us",
    "fused loaded us",
    "slowdown [95% CI]",
    "target",
    "verdict",
    "dense slowdown [95% CI]",
    "vs dense, loaded [95% CI]",
    "A/A [95% CI]",
    "loaded jobs (team/pool/serial)",
    "fused variant",
]


def load_under_load_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``load-*.json`` under-load record of ``folder``, oldest first
    (:func:`suite.report.side_records.load_side_records`)."""
    return load_side_records(folder, "load", "under_load")


def display_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One under-load result row as the table shows it (:data:`COLUMNS`); the report's table
    and the CLI's print both use it."""
    jobs = r.get("loaded_jobs") or {}
    return {
        "layer": f"{r['in_features']}->{r['out_features']}",
        "sparsity": f"{r['sparsity']:.0%}",
        "batch": r["batch"],
        "fused quiet us": f"{r['fused_quiet_median_s'] * 1e6:.1f}",
        "fused loaded us": f"{r['fused_loaded_median_s'] * 1e6:.1f}",
        "slowdown [95% CI]": ratio_cell(r, "slowdown"),
        "target": f"<= {r['target']:g}",
        "verdict": r["verdict"],
        "dense slowdown [95% CI]": ratio_cell(r, "dense_slowdown"),
        "vs dense, loaded [95% CI]": ratio_cell(r, "speedup_vs_dense_loaded"),
        "A/A [95% CI]": ratio_cell(r, "aa"),
        "loaded jobs (team/pool/serial)": "/".join(
            str(jobs.get(k, "?")) for k in ("team", "pool", "serial")
        ),
        "fused variant": r["fused_variant"],
    }


def under_load_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of one under-load record as the report's table."""
    return pd.DataFrame([display_row(r) for r in record["rows"]], columns=COLUMNS)


def newest_per_machine(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each machine class its newest record (:func:`suite.report.side_records.
    newest_per_machine` with this module's table), with ``busy`` (busy processes)."""
    out = side_newest(records, under_load_table)
    for m in out:
        m["busy"] = m["config"].get("load", "?")
    return out
