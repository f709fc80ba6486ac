"""``python -m suite.report``: the results store -> ``results/REPORT.md``, figures and tables.

Reads every record of the store and writes ``<out>/REPORT.md`` (prose in
``templates/report.md.j2``), ``<out>/figures/*.png`` (:mod:`suite.report.figures`) and
``<out>/tables/*.csv`` (:mod:`suite.report.frames`). Reports are regenerated, never hand-edited.

A report that cannot lie or destroy:

- a cell (experiment, method, sparsity) holds the seeds of ONE experiment-defining config (the
  run id without the seed); records of other settings (epochs, lr, batch size...) never replace
  or join it: they are listed in their own section, with what differs and their files;
- a missing or empty ``--runs`` folder is an error, and so is an invalid record file (named;
  ``--allow-invalid`` leaves it out with a warning, on the log and at the top of the report);
- everything is built in a temporary folder and moved into place at the end, so a failure
  leaves the previous report, figures and tables as they were; only the report's own files are
  replaced or removed (``make asv-publish``'s ``asv_history_<machine>.png`` and others stay).

    python -m suite.report                              # results/runs -> results/REPORT.md
    python -m suite.report --runs /tmp/runs --out /tmp/report

README.md's results block (between ``<!-- results:begin -->`` and ``<!-- results:end -->``) is
rendered from the same frames (``templates/readme_results.md.j2``) and rewritten with the
report: the README next to the output folder (``make report``: results/ -> README.md), or
``--readme PATH``; ``--no-readme`` leaves it alone.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from backends.timing import AA_TOLERANCE
from suite.cli import one_line_errors
from suite.report import claims as cl
from suite.report import figures, speed
from suite.report import frames as rd
from suite.report import nm_accuracy as nma
from suite.report import transformer_ablation as tra
from suite.report import under_load as ul
from suite.report import vs_probe as vsp
from suite.report import whole_model as wm
from suite.report.render import render
from suite.results import (
    DEFAULT_ROOT,
    InvalidRecordError,
    LoadError,
    ResultStore,
    atomic_write_bytes,
)

log = logging.getLogger(__name__)

DEFAULT_OUT = Path("results")
DEFAULT_COMMANDS = (
    "make report                      # python -m suite.report: from the published records",
    "make reproduce PROFILE=default   # retrain into results/reproduction/, compare",
    "make publish PROFILE=default     # copy the reproduction into results/runs, then report",
)
REPORT_NAME = "REPORT.md"
README_BEGIN = "<!-- results:begin -->"
README_END = "<!-- results:end -->"
# The report's own outputs: the only files it replaces or removes (when it has no data for one).
REPORT_FIGURES = (
    "accuracy_vs_sparsity.png",
    "ablation_over_training.png",
    "speedup_vs_sparsity.png",
    "speedup_vs_batch.png",
    "whole_model.png",
)
REPORT_TABLES = (
    "accuracy_summary.csv",
    "claims.csv",
    "nm_accuracy_claims.csv",
    "transformer_claims.csv",
    "ablation.csv",
    "ablation_curves.csv",
    "size.csv",
    "bench_rows.csv",
    "whole_model.csv",
    "nm_whole_model.csv",
    "other_settings.csv",
)


class ReportError(ValueError):
    """The report cannot be built from what it was given (no store, an empty store)."""


class InvalidStoreError(InvalidRecordError):
    """The store holds files that are not valid records (the message lists every one)."""


@dataclass
class Report:
    """What :func:`build_report` wrote (paths in their final place)."""

    path: Path
    figures: list[Path] = field(default_factory=list)
    tables: list[Path] = field(default_factory=list)
    n_train: int = 0
    n_other: int = 0
    n_bench: int = 0
    invalid: list[LoadError] = field(default_factory=list)
    readme: Path | None = None


# --------------------------------------------------------------------------- input


def load_store(
    runs_dir: str | os.PathLike, allow_invalid: bool = False
) -> tuple[list[dict[str, Any]], list[LoadError]]:
    """Every valid record of ``runs_dir`` and the invalid files (only with ``allow_invalid``).

    Raises:
        ReportError: ``runs_dir`` is not a folder or holds no record file.
        InvalidStoreError: invalid files and not ``allow_invalid`` (every file named).
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise ReportError(f"--runs {runs_dir}: no such folder; allowed: a results store folder")
    store = ResultStore(runs_dir)
    if not store.files():
        raise ReportError(f"--runs {runs_dir}: holds no record file (*.json); nothing to report")
    records, invalid = store.read_with_errors()
    if invalid and not allow_invalid:
        listing = "\n".join(f"  {e.path}: {e.error}" for e in invalid)
        raise InvalidStoreError(
            f"{len(invalid)} invalid record file(s) in {runs_dir} (fix or remove them, or pass "
            f"--allow-invalid to leave them out with a warning):\n{listing}"
        )
    for e in invalid:
        log.warning(f"invalid record file left out of the report: {e.path}: {e.error}")
    return records, invalid


class _Outputs:
    """Files written into the temporary build folder, by their path relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: list[str] = []

    def figure(self, make: Any, frame: pd.DataFrame, name: str) -> str | None:
        """Plot ``make(frame, path)`` into ``figures/<name>``; its relative path, or None."""
        path = make(frame, self.root / "figures" / name)
        if not path:
            return None
        self.written.append(f"figures/{name}")
        return f"figures/{name}"

    def csv(self, frame: pd.DataFrame | None, name: str) -> None:
        """Write ``frame`` to ``tables/<name>`` (nothing for an empty frame)."""
        if frame is None or frame.empty:
            return
        (self.root / "tables").mkdir(parents=True, exist_ok=True)
        frame.to_csv(self.root / "tables" / name, index=False)
        self.written.append(f"tables/{name}")


def _or_none(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    return None if frame is None or frame.empty else frame


# --------------------------------------------------------------------------- sections


def header_section(
    runs_dir: Path,
    n_train: int,
    tabled: pd.DataFrame,
    other: pd.DataFrame,
    n_bench: int,
    n_bench_dup: int,
    invalid: Sequence[LoadError],
) -> dict[str, Any]:
    """Where the records come from and how many went where."""
    return {
        "runs_dir": str(runs_dir),
        "when": f"{_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M}",
        "n_train": n_train,
        "n_tabled": len(tabled),
        "n_other": len(other),
        "n_bench": n_bench,
        "n_bench_dup": n_bench_dup,
        "invalid": list(invalid),
    }


def headline_section(summary: pd.DataFrame, bench: pd.DataFrame) -> dict[str, Any]:
    """SRigL vs RigL vs dense accuracy and the fastest backend at the headline sparsity."""
    speed = rd.headline_speed(bench) if not bench.empty else None
    return {
        "accuracy": _or_none(rd.headline_accuracy(summary)) if not summary.empty else None,
        "speed": _or_none(speed),
        "sparsity": rd.HEADLINE_SPARSITY,
    }


def accuracy_section(summary: pd.DataFrame, tabled: pd.DataFrame, out: _Outputs) -> dict:
    """One accuracy table per experiment (with the paper's rows), the figure, the reference."""
    reference = rd.load_reference("accuracy.csv")
    out.csv(summary, "accuracy_summary.csv")
    experiments = [
        (str(exp), rd.accuracy_table(summary, exp, reference))
        for exp in summary["experiment"].drop_duplicates()
    ]
    fig = out.figure(figures.accuracy_vs_sparsity, tabled, "accuracy_vs_sparsity.png")
    return {
        "experiments": experiments,
        "figure": fig if experiments else None,
        "reference": rd.reference_table(reference),
    }


def claims_section(tabled: pd.DataFrame, out: _Outputs) -> dict[str, Any]:
    """The computed claims (:mod:`suite.report.claims`): a paired difference over seeds with
    its 95% interval and verdict per compared pair, experiment and sparsity; the prose lines
    rendered from them, a sentence counting them, the table."""
    claims = cl.claims_frame(tabled)
    out.csv(claims, "claims.csv")
    return {
        "lines": cl.claim_lines(claims),
        "summary": cl.claims_summary(claims),
        "table": _or_none(cl.claims_table(claims)),
        "comparisons": [f"`{a}` vs `{b}`" for a, b in cl.COMPARISONS],
        "level": cl.LEVEL,
    }


def nm_accuracy_section(summary: pd.DataFrame, tabled: pd.DataFrame, out: _Outputs) -> dict:
    """N:M vs uniform SRigL and RigL at the same sparsity (:mod:`suite.report.nm_accuracy`):
    a table per experiment with the paired verdicts; empty without N:M records."""
    section = nma.nm_accuracy_section(summary, tabled)
    if section["experiments"]:
        out.csv(section["claims"], "nm_accuracy_claims.csv")
    return section


def transformer_section(summary: pd.DataFrame, tabled: pd.DataFrame, out: _Outputs) -> dict:
    """Neuron ablation on the digits ViT beside the paper's ViT-B/16
    (:mod:`suite.report.transformer_ablation`); says how to produce the runs when absent."""
    section = tra.transformer_section(summary, tabled)
    if section["has_runs"]:
        out.csv(section["claims"], "transformer_claims.csv")
    return section


def ablation_section(
    records: Sequence[Mapping[str, Any]], tabled: pd.DataFrame, out: _Outputs
) -> dict[str, Any]:
    """With vs without neuron ablation per seed, and ablated neurons over training."""
    table = rd.ablation_table(tabled)
    out.csv(table, "ablation.csv")
    curves = rd.ablation_curves(records, tabled)
    out.csv(curves, "ablation_curves.csv")
    return {
        "table": _or_none(table.drop(columns=["diff_mean", "diff_std"])),
        "figure": out.figure(figures.ablation_over_training, curves, "ablation_over_training.png"),
        "pair": rd.ABLATION_PAIR,
        "min_sparsity": rd.ABLATION_MIN_SPARSITY,
    }


def _size_formats(sizes: pd.DataFrame) -> dict[str, str]:
    """Integers for parameter counts, 3 decimals for densities and MFLOPs."""
    formats = {}
    for col in sizes.columns:
        if col.startswith("params"):
            formats[col] = "{:,.0f}"
        elif col.startswith("flops") or col == "density":
            formats[col] = "{:.3f}"
    return formats


def size_section(
    records: Sequence[Mapping[str, Any]], tabled: pd.DataFrame, out: _Outputs
) -> dict[str, Any]:
    """Parameters, FLOPs and bytes per cell."""
    sizes = rd.size_table(records, tabled)
    out.csv(sizes, "size.csv")
    return {"table": _or_none(sizes), "formats": _size_formats(sizes)}


def backends_section(
    records: Sequence[Mapping[str, Any]], bench: pd.DataFrame, out: _Outputs
) -> dict[str, Any]:
    """Per machine class: the A/A control, speed-ups vs dense (with intervals), vs the best
    dense baseline and vs CSR; the figures, the paper's layer timing, what was skipped."""
    section: dict[str, Any] = {"machines": [], "figures": [], "aa_tolerance": AA_TOLERANCE}
    if not bench.empty:
        out.csv(bench.drop(columns=["created"]), "bench_rows.csv")
        section["machines"] = speed.machine_tables(bench)
        plotted = bench[(bench["backend"] != speed.AA_BACKEND) & ~speed.nm_rows(bench)]
        for make, name, title in (
            (figures.speedup_vs_sparsity, "speedup_vs_sparsity.png", "speed-up vs sparsity"),
            (figures.speedup_vs_batch, "speedup_vs_batch.png", "speed-up vs batch size"),
            (figures.roofline, "roofline.png", "every backend on the machine's roofline"),
        ):
            path = out.figure(make, plotted, name)
            if path:
                section["figures"].append((title, path))
    section["layer_timing"] = rd.layer_timing_comparison(
        bench, rd.load_reference("layer_timing.csv")
    )
    section["skipped"] = _or_none(rd.skipped_frame(records))
    nm_whole = rd.nm_whole_model_frame(records)
    if not nm_whole.empty:
        out.csv(nm_whole, "nm_whole_model.csv")
    section["nm_whole_model"] = _or_none(wm.nm_whole_model_table(nm_whole))
    return section


def whole_model_section(records: Sequence[Mapping[str, Any]], out: _Outputs) -> dict[str, Any]:
    """Whole condensed models vs dense eval and BN-folded dense (:mod:`suite.report.whole_model`
    over ``metrics.whole_model`` of the bench records): speed-ups, costs, a figure."""
    whole = rd.whole_model_frame(records)
    if whole.empty:
        return {"table": None, "fused": None, "costs": None, "figures": []}
    out.csv(whole, "whole_model.csv")
    speedups = wm.whole_model_speedups(whole)
    fig = out.figure(wm.whole_model_figure, whole, "whole_model.png")
    fused = speedups[speedups["backend"] == "fused"] if not speedups.empty else speedups
    short = ["model", "machine", "sparsity", "batch", "vs dense [95% CI]", "run"]
    return {
        "table": speedups if not speedups.empty else rd.whole_model_display(whole),
        "fused": _or_none(fused[[c for c in short if c in fused]] if not fused.empty else None),
        "costs": _or_none(wm.whole_model_costs(whole)),
        "figures": [("whole-model speed-up vs dense", fig)] if fig else [],
    }


def probe_section(runs_dir: Path) -> dict[str, Any]:
    """``fused`` against this CPU's C probe (:mod:`suite.report.vs_probe`), from the vs-probe
    records beside the store (``<runs_dir>/../probes``): the newest per machine class."""
    folder = runs_dir.parent / "probes"
    machines = vsp.newest_per_machine(vsp.load_probe_records(folder))
    return {"machines": machines, "folder": str(folder)}


def under_load_section(runs_dir: Path) -> dict[str, Any]:
    """``fused`` beside busy processes, paired with its quiet time (:mod:`suite.report.under_load`),
    from the under-load records beside the store (``<runs_dir>/../load``): the newest per machine
    class."""
    folder = runs_dir.parent / "load"
    machines = ul.newest_per_machine(ul.load_under_load_records(folder))
    return {"machines": machines, "folder": str(folder)}


def other_section(
    records: Sequence[Mapping[str, Any]],
    tabled: pd.DataFrame,
    other: pd.DataFrame,
    out: _Outputs,
) -> dict[str, Any]:
    """Cells run with other settings than the tables' (never mixed into them)."""
    table = rd.other_settings_table(records, tabled, other)
    out.csv(table, "other_settings.csv")
    if len(other):
        log.warning(
            f"{len(other)} train record(s) with other settings than the tables' cells are "
            "listed separately (section 'Other settings')"
        )
    return {"table": _or_none(table), "n": len(other)}


def provenance_section(records: Sequence[Mapping[str, Any]]) -> list[tuple[str, pd.DataFrame]]:
    """Machines, library versions and git commits the records came from."""
    if not records:
        return []
    return [
        ("Machine", rd.machine_table(records)),
        ("Library versions", rd.versions_table(records)),
        ("Git commits", rd.git_table(records)),
        ("Host during the bench runs", rd.host_check_table(records)),
    ]


# --------------------------------------------------------------------------- the report


def _swap_in(tmp: Path, out_dir: Path, written: Sequence[str]) -> None:
    """Move the built files into ``out_dir`` (REPORT.md last); remove the report's own files
    that this build did not produce (a figure without data this time). Nothing else is touched."""
    moved = set(written)
    for rel in sorted(moved, key=lambda r: r == REPORT_NAME):
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, target)
    own = [f"figures/{n}" for n in REPORT_FIGURES] + [f"tables/{n}" for n in REPORT_TABLES]
    for rel in own:
        if rel not in moved:
            (out_dir / rel).unlink(missing_ok=True)


def readme_target(readme: str | os.PathLike | None, out_dir: Path) -> Path | None:
    """The README whose results block this report rewrites, checked before any work.

    ``readme`` None: ``<out_dir>/../README.md`` when it exists and holds the markers (``make
    report``: results/ -> README.md; a report into a scratch folder touches no README), else
    none. An explicit path must exist and hold both markers.

    Raises:
        ReportError: an explicit README that is missing or lacks the markers.
    """
    if readme is None:
        path = out_dir.resolve().parent / "README.md"
        if not path.is_file():
            return None
        text = path.read_text(encoding="utf-8")
        if README_BEGIN not in text or README_END not in text:
            log.warning(f"{path} has no {README_BEGIN} / {README_END} markers: not rewritten")
            return None
        return path
    path = Path(readme)
    if not path.is_file():
        raise ReportError(f"--readme {path}: no such file; allowed: a README with the markers")
    split_readme(path.read_text(encoding="utf-8"), path)
    return path


def split_readme(text: str, path: Path) -> tuple[str, str, str]:
    """``(before, block, after)`` of a README around its results markers.

    Raises:
        ReportError: a marker is missing, repeated or out of order.
    """
    if text.count(README_BEGIN) != 1 or text.count(README_END) != 1:
        raise ReportError(
            f"{path}: needs exactly one {README_BEGIN} and one {README_END} line, found "
            f"{text.count(README_BEGIN)} and {text.count(README_END)}"
        )
    before, rest = text.split(README_BEGIN)
    block, after = rest.split(README_END) if README_END in rest else (None, None)
    if block is None:
        raise ReportError(f"{path}: {README_END} comes before {README_BEGIN}")
    return before, block, after


def write_readme_block(path: Path, block: str) -> bool:
    """Put ``block`` between the README's markers (atomic write); False when unchanged."""
    text = path.read_text(encoding="utf-8")
    before, _, after = split_readme(text, path)
    new = f"{before}{README_BEGIN}\n{block.strip()}\n{README_END}{after}"
    if new == text:
        return False
    atomic_write_bytes(path, new.encode("utf-8"))
    return True


def build_report(
    runs_dir: str | os.PathLike = DEFAULT_ROOT,
    out_dir: str | os.PathLike = DEFAULT_OUT,
    allow_invalid: bool = False,
    commands: Sequence[str] = DEFAULT_COMMANDS,
    readme: str | os.PathLike | None = None,
    write_readme: bool = True,
) -> Report:
    """Write ``<out_dir>/REPORT.md``, ``<out_dir>/figures/*.png`` and ``<out_dir>/tables/*.csv``.

    Args:
        runs_dir: the results store (a folder of record files).
        out_dir: where the report goes.
        allow_invalid: leave invalid record files out with a warning instead of failing.
        commands: the shell commands that regenerate this report, shown in it.
        readme: the README whose results block (between ``<!-- results:begin -->`` and
            ``<!-- results:end -->``) is rewritten from the same frames (see
            :func:`readme_target`; None: the README next to ``out_dir``'s folder, if marked).
        write_readme: False leaves every README alone.

    Raises:
        ReportError: ``runs_dir`` is missing or empty; an explicit ``readme`` without markers.
        InvalidStoreError: the store holds invalid files and ``allow_invalid`` is false.
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    readme_path = readme_target(readme, out_dir) if write_readme else None
    records, invalid = load_store(runs_dir, allow_invalid)
    train_all = rd.train_frame(records)
    tabled, other = rd.select_cells(train_all)
    bench, n_bench_dup = rd.bench_frame(records)
    summary = rd.accuracy_summary(tabled)
    n_bench = sum(1 for r in records if r["kind"] == "bench")

    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-build-", dir=out_dir))
    try:
        out = _Outputs(tmp)
        context = {
            "header": header_section(
                runs_dir, len(train_all), tabled, other, n_bench, n_bench_dup, invalid
            ),
            "headline": headline_section(summary, bench),
            "claims": claims_section(tabled, out),
            "accuracy": accuracy_section(summary, tabled, out),
            "nm_accuracy": nm_accuracy_section(summary, tabled, out),
            "ablation": ablation_section(records, tabled, out),
            "transformer": transformer_section(summary, tabled, out),
            "size": size_section(records, tabled, out),
            "backends": backends_section(records, bench, out),
            "whole_model": whole_model_section(records, out),
            "probe": probe_section(runs_dir),
            "under_load": under_load_section(runs_dir),
            "other": other_section(records, tabled, other, out),
            "provenance": provenance_section(records),
            "commands": list(commands),
        }
        (tmp / REPORT_NAME).write_text(render("report.md.j2", **context), encoding="utf-8")
        out.written.append(REPORT_NAME)
        block = render("readme_results.md.j2", **context)
        _swap_in(tmp, out_dir, out.written)
        if readme_path is not None and write_readme_block(readme_path, block):
            log.info(f"rewrote the results block of {readme_path}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Report(
        path=out_dir / REPORT_NAME,
        figures=[out_dir / r for r in out.written if r.startswith("figures/")],
        tables=[out_dir / r for r in out.written if r.startswith("tables/")],
        n_train=len(train_all),
        n_other=len(other),
        n_bench=n_bench,
        invalid=list(invalid),
        readme=readme_path,
    )


@one_line_errors
def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m suite.report [--runs DIR] [--out DIR] [--allow-invalid]``.

    Exit status: 0 written, 2 nothing written (missing/empty store, invalid files).
    """
    parser = argparse.ArgumentParser(
        prog="python -m suite.report", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--runs", default=str(DEFAULT_ROOT), help="results store (default %(default)s)"
    )
    parser.add_argument(
        "--out", default=str(DEFAULT_OUT), help="output folder (default %(default)s)"
    )
    parser.add_argument(
        "--allow-invalid",
        action="store_true",
        help="leave invalid record files out with a warning instead of failing",
    )
    parser.add_argument(
        "--readme",
        default=None,
        help="README whose results block to rewrite (default: README.md next to the --out "
        "folder, when it has the <!-- results:begin/end --> markers)",
    )
    parser.add_argument("--no-readme", action="store_true", help="rewrite no README")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = build_report(
            args.runs,
            args.out,
            allow_invalid=args.allow_invalid,
            readme=args.readme,
            write_readme=not args.no_readme,
        )
    except (ReportError, InvalidStoreError) as exc:
        log.error(f"{exc} (the previous report, figures and tables are unchanged)")
        return 2
    log.info(
        f"wrote {report.path} ({report.n_train} train records, {report.n_other} of other "
        f"settings; {report.n_bench} bench; {len(report.figures)} figures)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
