"""The report's "fused against this CPU's probe" table, from the records of
``python -m suite.bench vs-probe`` (``results/probes/probe-*.json``, :mod:`suite.bench.vs_probe`).

One table per machine class, from that class's newest record: per layer, the probe's time and
layout, ``fused`` timed in a C++ loop (kernel against kernel) and from Python (what a user
runs), each divided by the probe with its 95% interval, the per-call overhead between the two,
and the run's A/A control (the probe against itself).
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
    "probe us (layout)",
    "fused C++ loop us",
    "÷ probe [95% CI]",
    "fused forward us",
    "forward ÷ probe [95% CI]",
    "per-call overhead us",
    "A/A [95% CI]",
    "fused variant",
]


def load_probe_records(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``probe-*.json`` vs-probe record of ``folder``, oldest first
    (:func:`suite.report.side_records.load_side_records`)."""
    return load_side_records(folder, "probe", "vs_probe")


def display_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One vs-probe result row as the table shows it (:data:`COLUMNS`: microseconds, ratios
    with their intervals); the report's table and the CLI's print both use it."""
    return {
        "layer": f"{r['in_features']}->{r['out_features']}",
        "sparsity": f"{r['sparsity']:.0%}",
        "batch": r["batch"],
        "probe us (layout)": f"{r['probe_median_s'] * 1e6:.1f} ({r['probe_layout']})",
        "fused C++ loop us": f"{r['fused_native_median_s'] * 1e6:.1f}",
        "÷ probe [95% CI]": ratio_cell(r, "fused_native_over_probe"),
        "fused forward us": f"{r['fused_median_s'] * 1e6:.1f}",
        "forward ÷ probe [95% CI]": ratio_cell(r, "fused_over_probe"),
        "per-call overhead us": f"{r['overhead_s'] * 1e6:.1f}",
        "A/A [95% CI]": ratio_cell(r, "probe_aa_over_probe"),
        "fused variant": r["fused_variant"],
    }


def probe_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of one vs-probe record as the report's table (microseconds, ratios)."""
    return pd.DataFrame([display_row(r) for r in record["rows"]], columns=COLUMNS)


def newest_per_machine(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each machine class (``host.asv_name``) its newest record: ``{"machine", "record",
    "commit", "dirty", "load", "gomp_spincount", "table"}``, machines in name order."""
    out = side_newest(records, probe_table)
    for m in out:
        m["gomp_spincount"] = m["config"].get("GOMP_SPINCOUNT", "not recorded")
    return out
