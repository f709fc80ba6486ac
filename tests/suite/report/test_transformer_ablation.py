"""suite.report.transformer_ablation: the digits ViT's ablation verdicts beside the paper's
ViT-B/16 figures, on synthetic records with known effects; without digits_vit records the
section says how to produce them (no crash)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import make_train_records, train_config, train_metrics, write_store

from suite.report import claims as cl
from suite.report import frames as rd
from suite.report import transformer_ablation as tra
from suite.report.app import build_report
from suite.results import make_record

SEEDS = (0, 1, 2, 3, 4)
SPARSITIES = (0.8, 0.9, 0.95, 0.99)
# points of top-1 relative to rigl: srigl (with ablation) and srigl_no_ablation, per sparsity
SRIGL = {0.8: 0.0, 0.9: 0.0, 0.95: -0.5, 0.99: -1.0}
NO_ABLATION = {0.8: -3.0, 0.9: -4.0, 0.95: -0.5, 0.99: -6.0}
HEADING = "### Neuron ablation on a transformer"


def _record(method: str, sparsity: float, seed: int, top1: float) -> dict:
    cfg = train_config(tra.EXPERIMENT, method, sparsity, seed)
    cfg["trainer"]["name"] = "srigl" if method.startswith("srigl") else method
    metrics = train_metrics(top1, method)
    metrics["global_density"] = 1.0 if method == "dense" else 1.0 - sparsity
    rec = make_record("train", cfg, metrics)
    rec["created"] = "2026-12-07T05:00:00+00:00"
    return rec


def vit_records(rng_seed: int = 0) -> list[dict]:
    """profile=transformer's grid: a seed effect shared by the methods of a seed, small noise,
    srigl and srigl_no_ablation shifted from rigl by :data:`SRIGL` / :data:`NO_ABLATION`
    (srigl - srigl_no_ablation is exactly 0 at 95%)."""
    rng = np.random.default_rng(rng_seed)
    records = []
    for seed in SEEDS:
        base = 90.0 + rng.normal(0.0, 1.0)
        records.append(_record("dense", 0.0, seed, base + 2.0))
        for sp in SPARSITIES:
            noise = float(rng.normal(0.0, 0.2))
            records.append(_record("rigl", sp, seed, base + noise))
            srigl = base + noise + SRIGL[sp]
            records.append(_record("srigl", sp, seed, srigl))
            gap = SRIGL[sp] - NO_ABLATION[sp]
            spread = 0.0 if gap == 0 else float(rng.normal(0.0, 0.2))
            records.append(_record("srigl_no_ablation", sp, seed, srigl - gap + spread))
    return records


def _tabled(records: list[dict]) -> tuple[pd.DataFrame, pd.DataFrame]:
    tabled, _ = rd.select_cells(rd.train_frame(records))
    return rd.accuracy_summary(tabled), tabled


def test_the_paper_rows_are_the_reference_csvs_vit_b16_figures():
    paper = tra.paper_rows(rd.load_reference("accuracy.csv"))
    top1 = {(r.method, r.sparsity): r.top1 for r in paper.itertuples()}
    assert top1[("srigl", 0.9)] == 76.00 and top1[("srigl_no_ablation", 0.9)] == 71.26
    assert top1[("rigl", 0.8)] == 77.88 and top1[("dense", 0.0)] == 78.35


@pytest.mark.parametrize(
    ("sparsity", "ablation", "vs_rigl"),
    [
        (0.8, cl.BETTER, cl.NO_DIFFERENCE),
        (0.9, cl.BETTER, cl.NO_DIFFERENCE),
        (0.95, cl.NO_DIFFERENCE, cl.WORSE),
        (0.99, cl.BETTER, cl.WORSE),
    ],
)
def test_the_verdicts_follow_the_paired_differences(sparsity, ablation, vs_rigl):
    summary, tabled = _tabled(vit_records())
    section = tra.transformer_section(summary, tabled)
    row = section["verdicts"].set_index("sparsity").loc[rd.sparsity_label(sparsity)]
    assert row["srigl vs srigl_no_ablation"].startswith(f"{ablation}: ")
    assert row["srigl vs rigl"].startswith(f"{vs_rigl}: ")


def test_the_verdict_table_sets_the_papers_differences_beside_ours():
    summary, tabled = _tabled(vit_records())
    table = tra.transformer_section(summary, tabled)["verdicts"]
    assert list(table["sparsity"]) == ["80%", "90%", "95%", "99%"]
    assert list(table["paper: srigl - srigl_no_ablation"]) == ["+3.97", "+4.74", "-", "-"]
    assert list(table["paper: srigl - rigl"]) == ["-0.41", "-0.39", "-", "-"]
    assert table.iloc[1]["srigl vs srigl_no_ablation"].startswith("better: +4.")


def test_the_accuracy_table_has_our_methods_then_the_papers_vit_rows():
    summary, tabled = _tabled(vit_records())
    table = tra.transformer_section(summary, tabled)["table"]
    assert list(table["method"]) == [
        "dense",
        "rigl",
        "srigl",
        "srigl_no_ablation",
        "paper: dense",
        "paper: rigl",
        "paper: srigl",
        "paper: srigl_no_ablation",
    ]
    assert list(table.columns) == ["method", "0% (dense)", "80%", "90%", "95%", "99%"]
    srigl = table.set_index("method").loc["srigl"]
    assert "(n=5), density 10.00%" in srigl["90%"] and "±" in srigl["90%"]
    assert table.set_index("method").loc["paper: srigl", "90%"] == "76.00"


def test_without_vit_records_the_section_says_how_to_produce_them():
    summary, tabled = _tabled(make_train_records())
    section = tra.transformer_section(summary, tabled)
    assert not section["has_runs"] and section["lines"] == []
    assert list(section["table"]["method"])[0] == "paper: dense"


def test_the_report_renders_the_section_from_records(tmp_path: Path):
    write_store(tmp_path / "runs", vit_records())
    build_report(tmp_path / "runs", tmp_path / "out", write_readme=False)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert text.count(HEADING) == 1
    section = text.split(HEADING)[1].split("\n## ")[0]
    assert re.search(r"\| paper: srigl_no_ablation +\|", section)
    assert "- `srigl` vs `srigl_no_ablation`, digits_vit: better at 80% (+3." in section
    assert "make reproduce PROFILE=transformer" not in section
    assert "8 comparisons: " in section  # the claims' count sentence
    assert (tmp_path / "out" / "tables" / "transformer_claims.csv").is_file()


def test_the_report_without_vit_records_says_how_to_produce_them(tmp_path: Path):
    write_store(tmp_path / "runs", make_train_records())
    build_report(tmp_path / "runs", tmp_path / "out", write_readme=False)
    text = (tmp_path / "out" / "REPORT.md").read_text()
    section = text.split(HEADING)[1].split("\n## ")[0]
    assert "No `digits_vit` records in this store: `make reproduce PROFILE=transformer`" in section
    assert re.search(r"\| paper: srigl +\| +\| 77\.47 \| 76\.00 \|", section)
    assert not (tmp_path / "out" / "tables" / "transformer_claims.csv").exists()
