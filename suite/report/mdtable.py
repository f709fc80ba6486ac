"""A small pipe-table renderer for Markdown (no dependency on ``tabulate``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pandas as pd


def format_cell(value: Any, float_format: str = "{:.2f}") -> str:
    """One table cell as text: floats with ``float_format``, missing values as ``-``.

    Pipes and newlines are escaped so that a cell never breaks the table.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value is pd.NA or value is pd.NaT:
        return "-"
    if isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = float_format.format(value)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    frame: pd.DataFrame,
    index: bool = False,
    float_format: str = "{:.2f}",
    formats: Mapping[str, str] | None = None,
) -> str:
    """Render ``frame`` as a GitHub-flavoured Markdown pipe table.

    Args:
        frame: any DataFrame (MultiIndex columns are joined with " ").
        index: also print the index (its names become the first headers).
        float_format: format for float cells.
        formats: per-column float formats (column name -> format) overriding ``float_format``.

    Returns:
        The table as a string without a trailing newline (``"(empty)"`` for no rows).
    """
    if index:
        frame = frame.reset_index()
    if len(frame) == 0:
        return "(empty)"
    headers = [
        " ".join(str(c) for c in col) if isinstance(col, tuple) else str(col)
        for col in frame.columns
    ]
    lines = [
        "| " + " | ".join(format_cell(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    col_formats = [(formats or {}).get(str(col), float_format) for col in frame.columns]
    for row in frame.itertuples(index=False, name=None):
        cells = (format_cell(v, f) for v, f in zip(row, col_formats))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
