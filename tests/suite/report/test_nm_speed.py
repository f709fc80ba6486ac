"""suite.report.speed, N:M side: the section "N:M vs constant fan-in" shows every N:M row's
speed-up over dense and over its constant fan-in partner with intervals, keeps those rows out of
the layer grids, and is left out of the report when no record has N:M rows."""

from __future__ import annotations

import pandas as pd
from report_fixtures import paired_row, write_store

from suite.report import speed
from suite.report.app import build_report
from suite.results import make_record


def _row(backend, pattern, batch, speedup, low, high, sparsity=0.5, **kw):
    """A paired row (times consistent with its speed-up)."""
    return paired_row(
        backend, sparsity, batch, speedup, low, high, mode="kernel", pattern=pattern, **kw
    )


def _nm_case(batch=1):
    """One 2:4 case: A/A, the N:M fused row (faster than fan-in, and with no measurable
    difference at batch 256) and its constant fan-in partner."""
    vs = (1.25, 1.1, 1.4) if batch == 1 else (1.02, 0.97, 1.08)
    return [
        _row("dense_aa", "2:4", batch, 1.0, 0.98, 1.02, nm_pair="2:4"),
        _row(
            "fused",
            "2:4",
            batch,
            2.5,
            2.3,
            2.7,
            nm_pair="2:4",
            speedup_vs_fan_in=vs[0],
            speedup_vs_fan_in_ci_low=vs[1],
            speedup_vs_fan_in_ci_high=vs[2],
            fan_in_speedup=2.0,
            fan_in_speedup_ci_low=1.9,
            fan_in_speedup_ci_high=2.1,
        ),  # fmt: skip
        _row("fused", "fan_in", batch, 2.0, 1.9, 2.1, nm_pair="2:4"),
    ]


def _grid():
    """Rows of the ordinary grid at the same sparsity as the 2:4 rows (50%)."""
    return [
        _row("dense_aa", "fan_in", 1, 1.0, 0.97, 1.03),
        _row("fused", "fan_in", 1, 3.1, 2.9, 3.3),
    ]


def _record(rows):
    record = make_record("bench", {"profile": {"name": "quick"}}, {"rows": rows})
    record["host"] = {**record["host"], "asv_name": "amd-f25m1-avx2-2c", "cpu": "AMD EPYC 7B13"}
    return record


def test_nm_table_has_a_row_per_nm_row_with_all_three_intervals():
    frame = pd.DataFrame([*_grid(), *_nm_case(1), *_nm_case(256)])
    frame["run_id"] = "r"
    table = speed.nm_table(frame)
    assert list(table["batch"]) == [1, 256] and set(table["backend"]) == {"fused"}
    assert set(table["pattern"]) == {"2:4 (50.0%)"} and set(table["shape"]) == {"3072->768"}
    first, second = table.to_dict("records")
    assert first["N:M vs dense"] == "2.50 [2.30, 2.70]"
    assert first["fan-in vs dense"] == "2.00 [1.90, 2.10]"
    assert first["N:M vs fan-in"] == "1.25 [1.10, 1.40]"
    assert second["N:M vs fan-in"] == "no measurable difference [0.97, 1.08]"


def test_the_report_has_the_nm_section_and_keeps_nm_rows_out_of_the_layer_grid(tmp_path):
    write_store(tmp_path / "runs", [_record([*_grid(), *_nm_case(1), *_nm_case(256)])])
    text = build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "## N:M vs constant fan-in" in text
    section = text.split("## N:M vs constant fan-in")[1].split("\n## ")[0]
    assert "### N:M speed, machine: amd-f25m1-avx2-2c (AMD EPYC 7B13)" in section
    assert "1.25 [1.10, 1.40]" in section and "no measurable difference [0.97, 1.08]" in section
    grid = text.split("**vs dense `F.linear`**")[1].split("###")[0]
    assert "3.10 [2.90, 3.30]" in grid  # the grid's own 50% row, not the N:M pair's
    assert "2.50" not in grid and "2.00 [1.90" not in grid


def test_the_report_leaves_the_nm_section_out_without_nm_rows(tmp_path):
    old = [{k: v for k, v in r.items() if k != "pattern"} for r in _grid()]  # older record
    write_store(tmp_path / "runs", [_record(_grid()), _record(old)])
    text = build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "N:M vs constant fan-in" not in text and "3.10 [2.90, 3.30]" in text


def test_a_record_of_only_the_nm_comparison_renders_without_an_empty_grid(tmp_path):
    write_store(tmp_path / "runs", [_record(_nm_case(1))])
    text = build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "Only the N:M comparison was timed on this machine" in text
    assert "**vs dense `F.linear`**" not in text and "1.25 [1.10, 1.40]" in text


def _whole(backend, batch, speedup, low, high, **kw):
    """A row of ``metrics.nm_whole_model`` (suite.bench.nm_whole_model)."""
    row = {
        "model": "vit_b16",
        "experiment": "imagenet_vit_b16",
        "backend": backend,
        "batch": batch,
        "pattern": "1:4",
        "nm_pair": "1:4",
        "sparsity": 0.75,
        "nm_layers": 48,
        "threads": 2,
        "speedup": speedup,
        "speedup_ci_low": low,
        "speedup_ci_high": high,
        "median_s": 0.010 / speedup,
        "dense_median_s": 0.010,
    }
    if backend != "dense_aa":
        row.update(
            speedup_vs_fan_in=speedup,
            speedup_vs_fan_in_ci_low=low,
            speedup_vs_fan_in_ci_high=high,
        )
    return {**row, **kw}


def test_the_nm_section_has_a_whole_model_table_with_the_interval_and_its_aa_control(tmp_path):
    whole = [_whole("dense_aa", 1, 1.0, 0.99, 1.01), _whole("fused", 1, 1.3, 1.2, 1.4)]
    whole += [_whole("dense_aa", 32, 1.0, 0.98, 1.03), _whole("fused", 32, 1.01, 0.96, 1.06)]
    record = _record(_grid())
    record["metrics"]["nm_whole_model"] = whole
    write_store(tmp_path / "runs", [record])
    text = build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    section = text.split("## N:M vs constant fan-in")[1].split("\n## ")[0]
    table = section.split("### N:M speed, whole models")[1]
    lines = [ln for ln in table.splitlines() if "imagenet_vit_b16" in ln]
    assert len(lines) == 2  # one per batch; the A/A rows are a column, not rows
    assert "1:4 (75.0%)" in lines[0] and "1.30 [1.20, 1.40]" in lines[0]
    assert "no measurable difference [0.99, 1.01]" in lines[0]  # batch 1's A/A
    assert "no measurable difference [0.96, 1.06]" in lines[1]
    assert (tmp_path / "out" / "tables" / "nm_whole_model.csv").exists()
