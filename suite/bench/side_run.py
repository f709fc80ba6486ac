"""What the bench's side runners (``python -m suite.bench vs-probe``, ``... under-load``) share:
parsing their cell lists, printing their rows as the report shows them, and writing their one
record beside the result store (``results/probes/probe-<id>.json``, ``results/load/load-<id>.json``,
read back by :mod:`suite.report.side_records`)."""

from __future__ import annotations

import datetime
import json
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from suite import machine
from suite.results import atomic_write_bytes, config_hash, git_info, library_versions

__all__ = ["markdown_rows", "parse_numbers", "parse_shapes", "write_side_record"]


def parse_shapes(text: str) -> list[tuple[int, int]]:
    """``"3072x768,768x3072"`` -> [(3072, 768), (768, 3072)].

    Raises:
        SystemExit: a part is not INxOUT (the message names it and what is allowed).
    """
    shapes = []
    for part in text.split(","):
        try:
            a, b = (int(v) for v in part.lower().split("x"))
        except ValueError:
            raise SystemExit(
                f"--shapes: {part!r} is invalid; allowed: INxOUT[,INxOUT...]"
            ) from None
        shapes.append((a, b))
    return shapes


def parse_numbers(text: str, kind: type, flag: str) -> list:
    """``"0.9,0.99"`` -> [0.9, 0.99] (each through ``kind``).

    Raises:
        SystemExit: a part is not a number of that kind (names ``flag`` and the text).
    """
    try:
        return [kind(v) for v in text.split(",") if v]
    except ValueError:
        raise SystemExit(f"{flag}: {text!r} is invalid; allowed: comma-separated numbers") from None


def markdown_rows(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    display_row: Callable[[Mapping[str, Any]], Mapping[str, Any]],
) -> str:
    """A Markdown table of result rows with the report's ``columns`` and formatting
    (``display_row``: one row as the report's table shows it)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(str(v) for v in display_row(r).values()) + " |")
    return "\n".join(lines)


def write_side_record(
    kind: str,
    prefix: str,
    config: Mapping[str, Any],
    rows: Sequence[Mapping[str, Any]],
    start: Any,
    out: str | pathlib.Path,
) -> pathlib.Path:
    """Write one side-runner record ``<out>/<prefix>-<id>.json`` atomically: ``kind``, its
    ``config`` and ``rows``, when (``created``), the git commit, the machine and its load since
    ``start`` (:func:`suite.machine.mark_start`) and at the end (:func:`suite.machine.mark_end`,
    taken here: with the cores the host gave where the start measured them), the library
    versions. Returns its path."""
    machine.mark_end()
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    record = {
        "kind": kind,
        "run_id": config_hash({**config, "created": created}),
        "created": created,
        "git": git_info(),
        "host": machine.host_fields(start),
        "versions": library_versions(),
        "config": dict(config),
        "rows": list(rows),
    }
    path = pathlib.Path(out) / f"{prefix}-{record['run_id']}.json"
    atomic_write_bytes(path, json.dumps(record, indent=1, sort_keys=True).encode())
    return path
