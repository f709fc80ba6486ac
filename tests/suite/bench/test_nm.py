"""suite.bench.nm: ``nm_patterns`` times N:M layers against constant fan-in at the same sparsity
in the same cases; bad patterns are one-line errors before any compute."""

from __future__ import annotations

import pytest

import suite.bench.nm as bench_nm
from backends.nm import is_nm
from suite.bench import BenchConfigError, run_bench
from suite.bench.settings import parse_nm_pattern, resolve_settings
from tests.suite.bench.test_app import bench_cfg

NM = ["shapes=[[32,16],[64,8]]", "sparsities=[0.5]", "batches=[1,3]"]


@pytest.mark.parametrize(
    "override, match",
    [
        ("nm_patterns=[3:2]", r"entry '3:2' is invalid; allowed: .*1 <= N < M"),
        ("nm_patterns=[0:4]", r"entry '0:4' is invalid"),
        ("nm_patterns=[4:4]", r"entry '4:4' is invalid"),
        ("nm_patterns=[a:b]", r"entry 'a:b' is invalid"),
        ("nm_patterns=[2-4]", r"entry '2-4' is invalid"),
        ("nm_patterns=[124]", r"entry 124 is invalid; allowed: .*quoted in YAML"),
        ("nm_patterns=2:4", r"nm_patterns='2:4' is invalid; allowed: a list"),
        ("nm_patterns=[2:4,2:4]", r"repeats a pattern"),
        ("nm_patterns=[1:64]", r"'1:64': shape \[32, 16\] has in_features 32, not a multiple of"),
    ],
)
def test_bad_nm_patterns_are_one_line_errors_naming_the_value(tmp_path, override, match):
    with pytest.raises(BenchConfigError, match=match) as info:
        resolve_settings(bench_cfg(tmp_path, *NM, override))
    assert "\n" not in str(info.value)


def test_nm_patterns_default_to_none_and_parse_to_pairs(tmp_path):
    assert resolve_settings(bench_cfg(tmp_path)).nm_patterns == []
    settings = resolve_settings(bench_cfg(tmp_path, *NM, "nm_patterns=[2:4,1:8]"))
    assert settings.nm_patterns == [(2, 4), (1, 8)]
    assert parse_nm_pattern("1:4") == (1, 4)


def test_an_empty_sparsity_grid_is_allowed_only_beside_nm_patterns(tmp_path):
    with pytest.raises(BenchConfigError, match=r"sparsities must be a non-empty list, got \[\]"):
        resolve_settings(bench_cfg(tmp_path, "sparsities=[]"))
    settings = resolve_settings(bench_cfg(tmp_path, *NM, "sparsities=[]", "nm_patterns=[1:4]"))
    assert settings.sparsities == [] and settings.nm_patterns == [(1, 4)]


def test_default_run_has_no_nm_rows_and_grid_rows_are_fan_in(tmp_path):
    record, _ = run_bench(bench_cfg(tmp_path, "shapes=[[24,16]]", "sparsities=[0.5]"))
    rows = record["metrics"]["rows"]
    assert all(r["pattern"] == "fan_in" and "nm_pair" not in r for r in rows)


def test_nm_run_times_exact_nm_masks_beside_fan_in_at_the_same_sparsity(
    tmp_path, monkeypatch, caplog
):
    masks = []
    real = bench_nm.layer_setup

    def spy(weight, mask, *args, **kwargs):
        masks.append((kwargs["extra"]["pattern"], mask.clone()))
        return real(weight, mask, *args, **kwargs)

    monkeypatch.setattr(bench_nm, "layer_setup", spy)
    caplog.set_level("INFO", logger="suite.bench.app")
    cfg = bench_cfg(
        tmp_path, *NM, "sparsities=[]", "nm_patterns=[2:4,1:8]", "backends=[dense,naive,csr]"
    )
    record, _ = run_bench(cfg)
    assert "N:M vs constant fan-in [95% CI]" in caplog.text  # the run's log shows the table
    # masks: per shape x pattern, the N:M one (exact N per group) and its fan-in partner
    assert [p for p, _ in masks] == ["2:4", "fan_in", "1:8", "fan_in"] * 2
    for (pattern, mask), (_, partner) in zip(masks[::2], masks[1::2]):
        n, m = parse_nm_pattern(pattern)
        assert is_nm(mask, n, m, allow_ablated=False)
        assert not is_nm(partner, n, m)  # random positions break the groups
        k = mask.shape[1] * n // m
        assert (mask.sum(1) == k).all() and (partner.sum(1) == k).all()

    assert all(r.get("nm_pair") for r in record["metrics"]["rows"])  # sparsities=[]: no grid
    rows = record["metrics"]["rows"]
    # 2 shapes x 2 patterns x 2 batches x (A/A + 2 layers x 3 backends x 2 modes)
    assert len(rows) == 2 * 2 * 2 * (1 + 2 * 3 * 2)
    for r in rows:
        n, m = parse_nm_pattern(r["nm_pair"])
        assert r["sparsity"] == pytest.approx(1 - n / m)
        assert r["k"] == r["in_features"] * n // m and r["n_pairs"] == 3
        assert r["pattern"] in (r["nm_pair"], "fan_in")
    nm_rows = [r for r in rows if r["pattern"] == r["nm_pair"] and r["backend"] != "dense_aa"]
    fan_in = {
        (r["nm_pair"], r["in_features"], r["batch"], r["backend"], r["mode"]): r
        for r in rows
        if r["pattern"] == "fan_in"
    }
    assert len(nm_rows) == len(fan_in) == 2 * 2 * 2 * 3 * 2
    for r in nm_rows:
        other = fan_in[(r["nm_pair"], r["in_features"], r["batch"], r["backend"], r["mode"])]
        low, est, high = (r[f"speedup_vs_fan_in{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert low <= est <= high
        assert est == pytest.approx(r["speedup"] / other["speedup"], rel=1e-6)
        assert r["fan_in_speedup"] == other["speedup"]
    aa = [r for r in rows if r["backend"] == "dense_aa"]
    assert len(aa) == 2 * 2 * 2 and all(r["pattern"] == r["nm_pair"] for r in aa)
