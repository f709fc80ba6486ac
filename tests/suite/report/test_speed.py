"""suite.report.speed: intervals in every cell, the A/A control above each table, one table per
machine class, and ratios only from one record's rows."""

from __future__ import annotations

import copy
import re

import pandas as pd
import pytest
from report_fixtures import bench_row, paired_row, write_store

from suite.report import frames as rd
from suite.report import speed
from suite.report.app import build_report
from suite.results import make_record


def _paired(backend, sparsity, batch, speedup, low, high, **kw):
    """A new-format row: its paired speed-up and interval (times consistent with them)."""
    return paired_row(backend, sparsity, batch, speedup, low, high, mode="end_to_end", **kw)


def _record(rows, asv_name="amd-f25m1-avx2-2c", cpu="AMD EPYC 7B13", run="x"):
    record = make_record("bench", {"profile": {"name": "quick"}, "run": run}, {"rows": rows})
    record["host"] = {**record["host"], "asv_name": asv_name, "cpu": cpu}
    return record


def test_a_cell_shows_its_interval_or_says_no_measurable_difference_or_no_interval():
    assert speed.speedup_cell(2.314, 2.2, 2.45) == "2.31 [2.20, 2.45]"
    assert speed.speedup_cell(1.03, 0.95, 1.08) == "no measurable difference [0.95, 1.08]"
    assert speed.speedup_cell(0.5, 0.45, 0.55) == "0.50 [0.45, 0.55]"
    assert speed.speedup_cell(3.0) == "3.00 (no interval)"


def test_the_report_shows_the_aa_row_above_each_machine_table(tmp_path):
    quiet = _record(
        [
            _paired("dense_aa", 0.9, 1, 1.0, 0.97, 1.02),
            _paired("dense", 0.9, 1, 1.01, 0.98, 1.05),
            _paired("fused", 0.9, 1, 3.1, 2.9, 3.3),
        ],
        run="quiet",
    )
    noisy = _record(
        [_paired("dense_aa", 0.9, 1, 1.2, 1.1, 1.3), _paired("fused", 0.9, 1, 2.0, 1.5, 2.6)],
        asv_name="amd-f26m2-avx512-2c",
        cpu="AMD EPYC 9B45",
        run="noisy",
    )
    write_store(tmp_path / "runs", [quiet, noisy])
    text = build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    sections = text.split("### Machine: ")[1:]
    assert [s.splitlines()[0] for s in sections] == [
        "amd-f25m1-avx2-2c (AMD EPYC 7B13)",
        "amd-f26m2-avx512-2c (AMD EPYC 9B45)",
    ]  # two CPUs: two tables, never one cell
    first, second = sections
    assert first.index("A/A control") < first.index("**vs dense")
    assert re.search(r"1\.000 \[0\.970, 1\.020\]\s*\|\s*ok", first) and "(0 noisy of 1)" in first
    assert "no measurable difference [0.98, 1.05]" in first and "3.10 [2.90, 3.30]" in first
    assert "noisy: A/A interval [1.100, 1.300] misses 1.0" in second
    assert "2.00 [1.50, 2.60]" in second and "3.10" not in second.split("### Layer")[0]


def test_vs_csr_never_divides_times_of_two_records():
    fused = _record([_paired("fused", 0.9, 1, 4.0, 3.8, 4.2)], run="a")
    csr = _record([_paired("csr", 0.9, 1, 2.0, 1.9, 2.1)], run="b")
    frame, _ = rd.bench_frame([fused, csr])
    row = frame[frame["backend"] == "fused"].iloc[0]
    assert pd.isna(row["speedup_vs_csr"])  # the csr row is another record's
    together = _record(
        [_paired("fused", 0.9, 1, 4.0, 3.8, 4.2), _paired("csr", 0.9, 1, 2.0, 1.9, 2.1)]
    )
    frame, _ = rd.bench_frame([together])
    assert frame[frame["backend"] == "fused"]["speedup_vs_csr"].iloc[0] == pytest.approx(2.0)


def test_old_rows_without_intervals_read_no_interval_and_do_not_crash():
    old = _record([bench_row("fused", 0.9, 1, 5e-5), bench_row("dense", 0.9, 1, 2e-4)])
    del old["host"]["asv_name"]
    frame, _ = rd.bench_frame([old])
    assert set(frame["verdict"]) == {"no interval"}
    (entry,) = speed.machine_tables(frame)
    assert entry["machine"].startswith("unknown class: AMD EPYC 7B13")
    assert entry["aa"] is None
    assert "4.00 (no interval)" in entry["vs_dense"].to_string()


def test_layer_text_renders_the_bench_log_from_the_same_tables():
    rows = [
        _paired("dense_aa", 0.9, 1, 1.0, 0.8, 1.25),
        _paired("fused", 0.9, 1, 3.0, 2.8, 3.2, best_dense="dense", speedup_vs_best_dense=3.0),
    ]
    text = speed.layer_text(copy.deepcopy(rows), "amd-f25m1-avx2-2c")
    assert "machine: amd-f25m1-avx2-2c" in text
    assert "noisy: A/A interval [0.800, 1.250] is wider than +-10%" in text
    assert "3.00 [2.80, 3.20]" in text and "best dense baseline (dense)" in text


def test_speedup_figures_draw_intervals_and_give_each_machine_its_own_panels(tmp_path):
    from suite.report import figures

    rows = [
        _paired(b, sp, batch, s, s * 0.9, s * 1.1)
        for b, s in (("fused", 3.0), ("csr", 1.5))
        for sp in (0.9, 0.99)
        for batch in (1, 256)
    ] + [_paired("dense_aa", 0.9, 1, 1.0, 0.95, 1.05)]
    frame, _ = rd.bench_frame([_record(rows), _record(rows, asv_name="amd-f26m2-avx512-2c")])
    data = figures._speedup_data(frame)
    assert data["setting"].nunique() == 2 and "dense_aa" not in set(data["backend"])
    path = figures.speedup_vs_sparsity(frame, tmp_path / "s.png")
    assert path is not None and path.stat().st_size > 5000
