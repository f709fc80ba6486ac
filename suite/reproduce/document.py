"""REPRODUCTION.md and its figure: the comparison rendered for a reader."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from suite.report import frames as rd
from suite.reproduce.compare import VERDICTS, Outcome, bench_summary, machine_class
from suite.reproduce.sweep import bench_command, bench_runs, shell_line, sweep_command
from suite.results import atomic_write_bytes

log = logging.getLogger(__name__)

SHOWN_COLUMNS = (
    "experiment",
    "method",
    "sparsity",
    "published",
    "published, same seeds",
    "reproduced",
    "difference",
    "2 SE",
    "bitwise",
    "machine",
    "verdict",
    "note",
)


def fmt_seconds(seconds: float) -> str:
    return f"{int(seconds // 60)}m{seconds % 60:04.1f}s"


def _sides(published: Sequence[Mapping], reproduced: Sequence[Mapping]) -> list:
    out = []
    for title, table in (
        ("Machine", rd.machine_table),
        ("Library versions", rd.versions_table),
        ("Git commits", rd.git_table),
    ):
        out.append((title, [("published", table(published)), ("reproduction", table(reproduced))]))
    return out


def machine_classes(
    outcome: Outcome, published: Sequence[Mapping], reproduced: Sequence[Mapping]
) -> pd.DataFrame:
    """The machine class of this run and of the published records: one row per (side, class)
    with its train-record count (``unknown``: records older than the machine identity)."""
    rows = [{"side": "this run", "machine class": outcome.machine or "unknown", "records": "-"}]
    for side, records in (("reproduction", reproduced), ("published", published)):
        counts: dict[str, int] = {}
        for rec in records:
            if rec.get("kind") == "train":
                name = machine_class(rec.get("host")) or "unknown"
                counts[name] = counts.get(name, 0) + 1
        rows += [
            {"side": side, "machine class": k, "records": v} for k, v in sorted(counts.items())
        ]
    return pd.DataFrame(rows)


def write_document(
    cfg: DictConfig,
    outcome: Outcome,
    published: Sequence[Mapping[str, Any]],
    reproduced: Sequence[Mapping[str, Any]],
) -> Path:
    """Write ``cfg.out`` (REPRODUCTION.md) and ``cfg.figure`` via temporary files."""
    from suite.report import figures
    from suite.report.render import render

    out, fig = Path(cfg.out), Path(cfg.figure)
    fig_rel = os.path.relpath(fig, out.parent)
    with tempfile.TemporaryDirectory(prefix=".reproduction-", dir=out.parent) as tmp:
        made = figures.reproduction_accuracy(outcome.cells, Path(tmp) / fig.name)
        cells = outcome.cells
        shown = cells
        if len(cells):
            shown = cells.assign(sparsity=cells["sparsity"].map(rd.sparsity_label))
        visible = [c for c in SHOWN_COLUMNS if c in shown]
        text = render(
            "reproduction.md.j2",
            cfg=cfg,
            profile=str(cfg.profile.name),
            command=f"make reproduce PROFILE={cfg.profile.name}",
            sweep=shell_line(sweep_command(cfg)),
            bench_commands=[shell_line(bench_command(cfg, r)) for r in bench_runs(cfg)]
            if cfg.bench.enabled
            else [],
            seconds={k: fmt_seconds(v) for k, v in outcome.seconds.items()},
            cells=shown[visible] if len(shown) else None,
            counts={v: int((cells["verdict"] == v).sum()) if len(cells) else 0 for v in VERDICTS},
            n_seeds=int(cells["new_n"].sum()) if len(cells) else 0,
            n_seed_identical=int(cells["n_identical"].fillna(0).sum()) if len(cells) else 0,
            figure=fig_rel if made else None,
            bench=bench_summary(outcome.bench) if not outcome.bench.empty else None,
            whole=_whole_rows(outcome.bench),
            tolerance=float(cfg.bench.tolerance),
            noise_se=float(cfg.noise_se),
            failed_steps=outcome.failed_steps,
            sides=_sides(published, reproduced),
            last_line=outcome.last_line(),
            headline=outcome.headline(),
            machines=machine_classes(outcome, published, reproduced),
        )
        if made:
            fig.parent.mkdir(parents=True, exist_ok=True)
            os.replace(made, fig)
        atomic_write_bytes(out, text.encode("utf-8"))
    return out


def _whole_rows(bench: pd.DataFrame) -> pd.DataFrame | None:
    if bench.empty or "whole model" not in set(bench["kind"]):
        return None
    sub = bench[bench["kind"] == "whole model"]
    shown = ("experiment", "model", "backend", "batch", "sparsity", "threads")
    cols = [c for c in shown if c in sub]
    return sub[cols + ["speedup_published", "speedup_new", "factor", "status"]]
