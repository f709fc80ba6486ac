"""suite.report.nm_accuracy: N:M vs uniform SRigL and RigL at the same sparsity, on synthetic
records with known effects; the report section appears only where N:M records exist and never
mixes the uniform cells with the ERK ones."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import train_config, train_metrics, write_store

from suite.report import claims as cl
from suite.report import frames as rd
from suite.report import nm_accuracy as nma
from suite.report.app import build_report
from suite.results import make_record

SEEDS = (0, 1, 2, 3, 4)
# points of top-1 added to each N:M method relative to both baselines, per sparsity
EFFECTS = {0.5: 3.0, 0.75: 0.0, 0.875: -3.0}


def _record(experiment: str, label: str, sparsity: float, seed: int, top1: float, **trainer):
    """A train record of ``label`` (name: the srigl trainer it runs) with ``trainer`` keys."""
    cfg = train_config(experiment, label, sparsity, seed)
    name = {"srigl_uniform": "srigl", "rigl_uniform": "rigl"}.get(label, label)
    cfg["trainer"] = {**cfg["trainer"], "name": name, **trainer}
    if label.startswith("nm_"):
        cfg["trainer"]["name"] = "rigl"
    metrics = train_metrics(top1, name)
    metrics["global_density"] = 1.0 - sparsity
    return make_record("train", cfg, metrics)


def nm_records(experiment: str = "digits_mlp", rng_seed: int = 0) -> list[dict]:
    """5 seeds of every N:M method and of uniform SRigL/RigL at its sparsity: a shared seed
    effect, small noise, and N:M shifted by :data:`EFFECTS` (zero at 75%)."""
    rng = np.random.default_rng(rng_seed)
    records = []
    for nm, sp in nma.NM_METHODS.items():
        for seed in SEEDS:
            base = 95.0 + rng.normal(0.0, 1.0)
            effect = EFFECTS[sp]
            noise = 0.0 if effect == 0.0 else float(rng.normal(0.0, 0.2))
            records.append(_record(experiment, nm, sp, seed, base + effect + noise))
            for label in nma.BASELINES:
                records.append(_record(experiment, label, sp, seed, base, distribution="uniform"))
    for rec in records:
        rec["created"] = "2026-12-07T03:00:00+00:00"
    return records


def _tabled(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tabled, _ = rd.select_cells(rd.train_frame(records))
    return rd.accuracy_summary(tabled), tabled


def test_each_nm_method_is_compared_with_both_baselines_at_its_own_sparsity():
    summary, tabled = _tabled(nm_records())
    claims = nma.nm_claims(tabled)
    assert len(claims) == 3 * 2
    for r in claims.itertuples():
        assert r.sparsity == nma.NM_METHODS[r.first] and r.second in nma.BASELINES
        assert r.n == len(SEEDS)


@pytest.mark.parametrize(
    ("sparsity", "verdict"),
    [(0.5, cl.BETTER), (0.75, cl.NO_DIFFERENCE), (0.875, cl.WORSE)],
)
def test_the_verdicts_follow_the_paired_differences(sparsity, verdict):
    summary, tabled = _tabled(nm_records())
    claims = nma.nm_claims(tabled)
    rows = claims[claims["sparsity"] == sparsity]
    assert list(rows["verdict"]) == [verdict, verdict]
    assert rows["diff"].to_numpy() == pytest.approx(EFFECTS[sparsity], abs=0.5)


def test_the_table_has_a_row_per_nm_method_with_mean_std_n_density_and_verdicts():
    summary, tabled = _tabled(nm_records())
    table = nma.nm_accuracy_table(summary, nma.nm_claims(tabled), "digits_mlp")
    assert list(table["sparsity"]) == ["50%", "75%", "87.5%"]
    assert list(table["N:M"]) == ["nm_2_4_rigl", "nm_1_4_rigl", "nm_1_8_rigl"]
    first = table.iloc[0]
    assert "(n=5), density 50.00%" in first["top-1 N:M"] and "±" in first["top-1 N:M"]
    assert "(n=5), density 50.00%" in first["top-1 srigl_uniform"]
    assert first["N:M vs srigl_uniform"].startswith("better: +3.")
    assert table.iloc[1]["N:M vs rigl_uniform"] == "no measurable difference: +0.00 [+0.00, +0.00]"
    assert table.iloc[2]["N:M vs rigl_uniform"].startswith("worse: -")


def test_a_missing_baseline_reads_a_dash_not_a_verdict():
    records = [r for r in nm_records() if r["config"]["trainer"]["label"] != "rigl_uniform"]
    summary, tabled = _tabled(records)
    table = nma.nm_accuracy_table(summary, nma.nm_claims(tabled), "digits_mlp")
    assert set(table["top-1 rigl_uniform"]) == {"-"}
    assert set(table["N:M vs rigl_uniform"]) == {"-"}
    assert not set(table["N:M vs srigl_uniform"]) & {"-"}


def test_no_nm_records_give_an_empty_section():
    summary, tabled = _tabled(
        [r for r in nm_records() if not r["config"]["trainer"]["label"].startswith("nm_")]
    )
    section = nma.nm_accuracy_section(summary, tabled)
    assert section["experiments"] == [] and section["lines"] == [] and section["summary"] == ""


def _erk_srigl(top1: float, seed: int, sparsity: float) -> dict:
    rec = make_record(
        "train",
        {
            **train_config("digits_mlp", "srigl", sparsity, seed),
            "trainer": {"label": "srigl", "name": "srigl", "distribution": "erk"},
        },
        train_metrics(top1, "srigl"),
    )
    rec["created"] = "2026-12-07T02:00:00+00:00"
    return rec


def test_the_report_has_the_section_only_with_nm_records_and_keeps_uniform_rows_apart(
    tmp_path: Path,
):
    # ERK srigl of the default profile at 50% too: another config, another row, never joined
    erk = [_erk_srigl(60.0, seed, 0.5) for seed in SEEDS]
    write_store(tmp_path / "runs", nm_records() + nm_records("digits_cnn", 1) + erk)
    build_report(tmp_path / "runs", tmp_path / "out", write_readme=False)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert text.count("## N:M vs constant fan-in: accuracy") == 1
    section = text.split("## N:M vs constant fan-in: accuracy")[1].split("\n## ")[0]
    assert "### digits_mlp" in section and "### digits_cnn" in section
    assert re.search(r"\| 50% +\| nm_2_4_rigl +\|", section)
    assert "60.00" not in section  # the ERK srigl cell stays out of the N:M comparison
    assert "- `nm_2_4_rigl` vs `srigl_uniform`, digits_mlp: better at 50% (+3." in section
    accuracy = text.split("## Accuracy vs sparsity")[1].split("\n## ")[0]
    mlp = accuracy.split("### digits_mlp")[1].split("###")[0]
    rows = [line.split("|")[1].strip() for line in mlp.splitlines() if line.startswith("| ")]
    assert {"srigl", "srigl_uniform", "rigl_uniform"} <= set(rows)  # own rows, not one

    write_store(tmp_path / "plain", erk)
    build_report(tmp_path / "plain", tmp_path / "out2", write_readme=False)
    assert "N:M vs constant fan-in: accuracy" not in (tmp_path / "out2" / "REPORT.md").read_text()


def test_the_headline_keeps_its_own_sparsities_without_rows_for_nm_ones():
    summary, _ = _tabled(nm_records() + [_erk_srigl(90.0, seed, 0.9) for seed in SEEDS])
    headline = rd.headline_accuracy(summary)
    assert list(headline["sparsity"]) == ["90%"]


def test_the_method_order_puts_uniform_baselines_before_nm_sparsest_last():
    methods = ("srigl", "rigl_uniform", "srigl_uniform", "srigl_fan_in", *nma.NM_METHODS)
    order = [rd.method_sort_key(m) for m in methods]
    assert order == sorted(order) and len({k[0] for k in order}) == len(methods)
