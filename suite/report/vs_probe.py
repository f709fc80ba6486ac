"""The report's "fused against this CPU's probe" table, from the records of
``python -m suite.bench vs-probe`` (``results/probes/probe-*.json``, :mod:`suite.bench.vs_probe`).

One table per machine class, from that class's newest record: per layer, the probe's time and
layout, ``fused`` timed in a C++ loop (kernel against kernel) and from Python (what a user
runs), each divided by the probe with its 95% interval, the per-call overhead between the two,
and the run's A/A control (the probe against itself).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from suite.machine import asv_machine_name

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
    """Every ``probe-*.json`` record of ``folder`` that parses and is a vs-probe record, oldest
    first (by ``created``); a missing folder gives []. A file that does not parse raises
    ValueError naming it (the store is written atomically: a bad file is a damaged one)."""
    out = []
    for path in sorted(Path(folder).glob("probe-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not a vs-probe record ({err})") from None
        if not isinstance(record, dict) or record.get("kind") != "vs_probe" or "rows" not in record:
            raise ValueError(f"{path}: not a vs-probe record (kind {record.get('kind')!r})")
        record["_path"] = str(path)
        out.append(record)
    return sorted(out, key=lambda r: str(r.get("created", "")))


def _ci(row: Mapping[str, Any], key: str) -> str:
    return f"{row[key]:.2f} [{row[key + '_ci_low']:.2f}, {row[key + '_ci_high']:.2f}]"


def display_row(r: Mapping[str, Any]) -> dict[str, Any]:
    """One vs-probe result row as the table shows it (:data:`COLUMNS`: microseconds, ratios
    with their intervals); the report's table and the CLI's print both use it."""
    return {
        "layer": f"{r['in_features']}->{r['out_features']}",
        "sparsity": f"{r['sparsity']:.0%}",
        "batch": r["batch"],
        "probe us (layout)": f"{r['probe_median_s'] * 1e6:.1f} ({r['probe_layout']})",
        "fused C++ loop us": f"{r['fused_native_median_s'] * 1e6:.1f}",
        "÷ probe [95% CI]": _ci(r, "fused_native_over_probe"),
        "fused forward us": f"{r['fused_median_s'] * 1e6:.1f}",
        "forward ÷ probe [95% CI]": _ci(r, "fused_over_probe"),
        "per-call overhead us": f"{r['overhead_s'] * 1e6:.1f}",
        "A/A [95% CI]": _ci(r, "probe_aa_over_probe"),
        "fused variant": r["fused_variant"],
    }


def probe_table(record: Mapping[str, Any]) -> pd.DataFrame:
    """The rows of one vs-probe record as the report's table (microseconds, ratios)."""
    return pd.DataFrame([display_row(r) for r in record["rows"]], columns=COLUMNS)


def newest_per_machine(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """For each machine class (``host.asv_name``) its newest record: ``{"machine", "record",
    "commit", "load", "table"}``, machines in name order."""
    newest: dict[str, Mapping[str, Any]] = {}
    for record in records:  # oldest first: the last one wins
        host = record.get("host", {})
        newest[host.get("asv_name") or asv_machine_name(host)] = record
    out = []
    for machine in sorted(newest):
        record = newest[machine]
        host = record.get("host", {})
        load = [(host.get(k) or {}).get("load_avg_1m") for k in ("load_start", "load_end")]
        out.append(
            {
                "machine": machine,
                "record": Path(record["_path"]).name,
                "commit": (record.get("git") or {}).get("commit", "")[:7],
                "dirty": bool((record.get("git") or {}).get("dirty")),
                "load": load,
                "gomp_spincount": (record.get("config") or {}).get(
                    "GOMP_SPINCOUNT", "not recorded"
                ),
                "table": probe_table(record),
            }
        )
    return out
