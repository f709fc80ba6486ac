"""Markdown rendering of the report: tables with ``DataFrame.to_markdown``, prose in Jinja2.

Tables: :func:`markdown_table` formats the cells (floats with a format, missing values as
``-``, pipes escaped) and lets pandas (``tabulate``) lay out the pipe table. Prose: the
templates under ``suite/report/templates/`` (``report.md.j2``, ``reproduction.md.j2``),
rendered by :func:`render` with the context the section functions build.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
EMPTY = "(empty)"


def format_cell(value: Any, float_format: str = "{:.2f}") -> str:
    """One table cell as text: floats with ``float_format``, missing values as ``-``.

    Pipes and newlines are escaped so that a cell never breaks the table.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return "-"
    if isinstance(value, float) and math.isnan(value):
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
    float_format: str = "{:.2f}",
    formats: Mapping[str, str] | None = None,
) -> str:
    """``frame`` as a GitHub pipe table (:meth:`pandas.DataFrame.to_markdown`).

    Args:
        frame: any DataFrame; its index is not printed (reset it to show it).
        float_format: format of float cells; formats: per-column formats overriding it.

    Returns:
        The table without a trailing newline; ``"(empty)"`` for a frame without rows.
    """
    if frame is None or len(frame) == 0:
        return EMPTY
    formats = formats or {}
    cells = pd.DataFrame(
        {
            str(col): [format_cell(v, formats.get(str(col), float_format)) for v in frame[col]]
            for col in frame.columns
        }
    )
    cells.columns = [format_cell(str(c)) for c in frame.columns]
    return cells.to_markdown(index=False, tablefmt="pipe", disable_numparse=True)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,  # a missing value is an error, never blank prose
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["table"] = markdown_table
    env.filters["pct"] = lambda x: f"{x:.0%}"
    return env


def render(template: str, **context: Any) -> str:
    """Render ``templates/<template>`` with ``context``; runs of blank lines are collapsed."""
    text = _environment().get_template(template).render(**context)
    lines: list[str] = []
    for line in text.rstrip().splitlines():
        if line.strip() or (lines and lines[-1].strip()):
            lines.append(line.rstrip())
    return "\n".join(lines) + "\n"
