"""Records that runners write beside the result store (``results/probes/probe-*.json`` of
``vs-probe``, ``results/load/load-*.json`` of ``under-load``): reading a folder of them and
picking each machine class's newest, for the report's sections."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from suite.machine import asv_machine_name


def ratio_cell(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` with its interval (``<key>_ci_low`` / ``_ci_high``) as table text, e.g.
    ``1.12 [1.07, 1.17]`` (the estimate always shown: a ratio to a probe or to a quiet time,
    not a speed-up, see :func:`suite.report.speed.speedup_cell`)."""
    return f"{row[key]:.2f} [{row[key + '_ci_low']:.2f}, {row[key + '_ci_high']:.2f}]"


def load_side_records(folder: str | Path, prefix: str, kind: str) -> list[dict[str, Any]]:
    """Every ``<prefix>-*.json`` record of ``folder`` whose ``kind`` is ``kind``, oldest first
    (by ``created``), each with ``_path``; a missing folder gives []. A file that does not parse
    or is of another kind raises ValueError naming it (the records are written atomically: a
    bad file is a damaged one)."""
    out = []
    what = kind.replace("_", "-")
    what = ("an " if what[0] in "aeiou" else "a ") + what
    for path in sorted(Path(folder).glob(f"{prefix}-*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise ValueError(f"{path}: not {what} record ({err})") from None
        if not isinstance(record, dict) or record.get("kind") != kind or "rows" not in record:
            got = record.get("kind") if isinstance(record, dict) else type(record).__name__
            raise ValueError(f"{path}: not {what} record (kind {got!r})")
        record["_path"] = str(path)
        out.append(record)
    return sorted(out, key=lambda r: str(r.get("created", "")))


def newest_per_machine(
    records: Sequence[Mapping[str, Any]], table: Callable[[Mapping[str, Any]], pd.DataFrame]
) -> list[dict[str, Any]]:
    """For each machine class (``host.asv_name``) its newest record: ``{"machine", "record",
    "commit", "dirty", "load", "config", "table"}`` (``table(record)``), machines in name
    order."""
    newest: dict[str, Mapping[str, Any]] = {}
    for record in records:  # oldest first: the last one wins
        host = record.get("host", {})
        newest[host.get("asv_name") or asv_machine_name(host)] = record
    out = []
    for name in sorted(newest):
        record = newest[name]
        host = record.get("host", {})
        git = record.get("git") or {}
        out.append(
            {
                "machine": name,
                "record": Path(record["_path"]).name,
                "commit": git.get("commit", "")[:7],
                "dirty": bool(git.get("dirty")),
                "load": [
                    (host.get(k) or {}).get("load_avg_1m") for k in ("load_start", "load_end")
                ],
                # the cores the host gave at the start and the end (None: not measured)
                "cores": [
                    (host.get(k) or {}).get("core_scaling") for k in ("load_start", "load_end")
                ],
                "config": dict(record.get("config") or {}),
                "table": table(record),
            }
        )
    return out
