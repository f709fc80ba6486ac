"""suite.report.vs_probe: the probe table from vs-probe records, in REPORT.md."""

from __future__ import annotations

import json

import pytest
from report_fixtures import side_record, write_json, write_small_store

from suite import report
from suite.report import vs_probe as vsp


def _row(ratio: float = 1.1) -> dict:
    row = {
        "in_features": 3072,
        "out_features": 768,
        "sparsity": 0.9,
        "batch": 1,
        "probe_median_s": 14e-6,
        "probe_layout": "zmm slide",
        "fused_native_median_s": 15e-6,
        "fused_median_s": 19e-6,
        "overhead_s": 4e-6,
        "fused_variant": "avx512/perm16x32/par",
    }
    for key in ("fused_native_over_probe", "fused_over_probe", "probe_aa_over_probe"):
        row.update({key: ratio, f"{key}_ci_low": ratio - 0.05, f"{key}_ci_high": ratio + 0.05})
    return row


def _record(machine: str, created: str, ratio: float) -> dict:
    return side_record("vs_probe", machine, created, [_row(ratio)], {"GOMP_SPINCOUNT": "10000"})


def test_the_newest_record_of_each_machine_makes_its_table(tmp_path):
    write_json(tmp_path, "probe-a.json", _record("m1", "2026-12-07T10:00:00", 1.5))
    write_json(tmp_path, "probe-b.json", _record("m1", "2026-12-07T12:00:00", 1.1))
    write_json(tmp_path, "probe-c.json", _record("m2", "2026-12-07T11:00:00", 2.0))
    got = vsp.newest_per_machine(vsp.load_probe_records(tmp_path))
    assert [m["machine"] for m in got] == ["m1", "m2"]
    assert got[0]["record"] == "probe-b.json" and got[0]["load"] == [0.5, 0.7]
    table = got[0]["table"]
    assert list(table.columns) == vsp.COLUMNS
    assert table.loc[0, "÷ probe [95% CI]"] == "1.10 [1.05, 1.15]"
    assert table.loc[0, "probe us (layout)"] == "14.0 (zmm slide)"


def test_a_damaged_record_is_named(tmp_path):
    (tmp_path / "probe-x.json").write_text("{not json")
    with pytest.raises(ValueError, match="probe-x.json"):
        vsp.load_probe_records(tmp_path)
    (tmp_path / "probe-x.json").write_text(json.dumps({"kind": "bench"}))
    with pytest.raises(ValueError, match="not a vs-probe record"):
        vsp.load_probe_records(tmp_path)
    assert vsp.load_probe_records(tmp_path / "missing") == []


def test_report_has_the_probe_section_from_the_folder_beside_the_store(tmp_path):
    write_small_store(tmp_path / "runs")
    text = report.build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "No vs-probe records" in text
    write_json(tmp_path / "probes", "probe-a.json", _record("m1", "2026-12-07T10:00:00", 1.12))
    text = report.build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "## `fused` against this CPU's limit (the C probe)" in text
    assert "1.12 [1.07, 1.17]" in text and "avx512/perm16x32/par" in text
