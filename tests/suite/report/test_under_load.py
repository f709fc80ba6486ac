"""suite.report.under_load: the under-load table from under-load records, in REPORT.md."""

from __future__ import annotations

import json

import pytest
from report_fixtures import side_record, write_json, write_small_store

from suite import report
from suite.report import under_load as ulr


def _row(slowdown: float = 1.3) -> dict:
    row = {
        "in_features": 3072,
        "out_features": 768,
        "sparsity": 0.9,
        "batch": 1,
        "fused_quiet_median_s": 20e-6,
        "fused_loaded_median_s": 26e-6,
        "target": 1.5,
        "verdict": "met",
        "loaded_jobs": {"team": 1, "pool": 2, "serial": 300},
        "fused_variant": "avx512/perm16x32/par",
    }
    for key, v in (
        ("slowdown", slowdown),
        ("dense_slowdown", 1.0),
        ("speedup_vs_dense_loaded", 5.0),
        ("aa", 1.0),
    ):
        row.update({key: v, f"{key}_ci_low": v - 0.05, f"{key}_ci_high": v + 0.05})
    return row


def _record(machine: str, created: str, slowdown: float) -> dict:
    return side_record("under_load", machine, created, [_row(slowdown)], {"load": 1})


def test_the_newest_record_of_each_machine_makes_its_table(tmp_path):
    write_json(tmp_path, "load-a.json", _record("m1", "2026-12-07T10:00:00", 1.9))
    write_json(tmp_path, "load-b.json", _record("m1", "2026-12-07T12:00:00", 1.3))
    write_json(tmp_path, "load-c.json", _record("m2", "2026-12-07T11:00:00", 2.0))
    got = ulr.newest_per_machine(ulr.load_under_load_records(tmp_path))
    assert [m["machine"] for m in got] == ["m1", "m2"]
    assert got[0]["record"] == "load-b.json" and got[0]["busy"] == 1
    table = got[0]["table"]
    assert list(table.columns) == ulr.COLUMNS
    assert table.loc[0, "slowdown [95% CI]"] == "1.30 [1.25, 1.35]"
    assert table.loc[0, "loaded jobs (team/pool/serial)"] == "1/2/300"


def test_a_damaged_record_is_named(tmp_path):
    (tmp_path / "load-x.json").write_text("{not json")
    with pytest.raises(ValueError, match="load-x.json"):
        ulr.load_under_load_records(tmp_path)
    (tmp_path / "load-x.json").write_text(json.dumps({"kind": "vs_probe", "rows": []}))
    with pytest.raises(ValueError, match="not an under-load record"):
        ulr.load_under_load_records(tmp_path)
    assert ulr.load_under_load_records(tmp_path / "missing") == []


def test_report_has_the_under_load_section_from_the_folder_beside_the_store(tmp_path):
    write_small_store(tmp_path / "runs")
    text = report.build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "No under-load records" in text
    write_json(tmp_path / "load", "load-a.json", _record("m1", "2026-12-07T10:00:00", 1.42))
    text = report.build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    assert "## `fused` under load (paired with its quiet time)" in text
    assert "1.42 [1.37, 1.47]" in text and "1/2/300" in text
