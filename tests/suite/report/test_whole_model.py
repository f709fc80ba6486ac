"""The report's whole-model table, cost table and figure."""

from __future__ import annotations

import pandas as pd
import pytest

from suite.report.whole_model import whole_model_costs, whole_model_figure, whole_model_speedups


def _whole() -> pd.DataFrame:
    rows = []
    for model, dense in (("cifar10_resnet18", 0.010), ("imagenet_vit_b16", 0.100)):
        for batch in (1, 32):
            for backend, t in (("fused", dense / 2.5), ("csr", dense / 1.2)):
                rows.append(
                    {
                        "model": model.split("_", 1)[1],
                        "experiment": model,
                        "backend": backend,
                        "structured": False,
                        "batch": batch,
                        "sparsity": 0.9,
                        "median_s": t * batch,
                        "min_s": t * batch * 0.9,
                        "dense_median_s": dense * batch,
                        "dense_min_s": dense * batch * 0.9,
                        "folded_median_s": dense * batch * 0.8,
                        "condensed_weight_fraction": 0.98,
                        "params_dense": 11_000_000,
                        "params_condensed": 1_200_000,
                        "flops_dense": 550_000_000,
                        "flops_condensed": 60_000_000,
                        "bytes_dense": 44_000_000,
                        "bytes_condensed": 7_000_000,
                    }
                )
    return pd.DataFrame(rows)


def test_speedup_table_has_one_row_per_model_batch_backend_with_both_baselines():
    table = whole_model_speedups(_whole())
    assert len(table) == 8 and set(table["model"]) == {"cifar10_resnet18", "imagenet_vit_b16"}
    fused = table[(table["backend"] == "fused") & (table["batch"] == 1)].iloc[0]
    assert fused["vs dense [95% CI]"] == "2.50 (no interval)"  # an older row: no samples
    assert fused["vs folded [95% CI]"] == "2.00 (no interval)"
    assert fused["dense (ms)"] == pytest.approx(10.0)
    assert "run" not in table


def test_speedup_table_names_each_rows_record():
    whole = _whole().assign(run_id=["old"] * 4 + ["new"] * 4)
    table = whole_model_speedups(whole)
    assert set(table.loc[table["model"] == "cifar10_resnet18", "run"]) == {"old"}
    assert set(table.loc[table["model"] == "imagenet_vit_b16", "run"]) == {"new"}


def test_speedup_table_without_folded_times_uses_the_dense_ones():
    whole = _whole().drop(columns=["folded_median_s"])
    table = whole_model_speedups(whole)
    assert (table["vs folded [95% CI]"] == table["vs dense [95% CI]"]).all()
    assert whole_model_speedups(pd.DataFrame()).empty


def test_cost_table_per_model():
    costs = whole_model_costs(_whole())
    assert len(costs) == 2
    row = costs.iloc[0]
    assert row["params dense (M)"] == pytest.approx(11.0)
    assert row["FLOPs ratio"] == pytest.approx(550 / 60)
    assert whole_model_costs(_whole().drop(columns=["flops_dense"])).empty


def test_figure_is_written_and_nothing_to_plot_gives_none(tmp_path):
    path = whole_model_figure(_whole(), tmp_path / "whole_model_speedup.png")
    assert path is not None and path.stat().st_size > 1000
    assert whole_model_figure(pd.DataFrame(), tmp_path / "none.png") is None


def test_speedup_table_shows_the_paired_intervals_and_no_measurable_difference():
    whole = _whole().assign(
        speedup=2.5,
        speedup_ci_low=[2.4, 0.9] * 4,
        speedup_ci_high=[2.6, 1.1] * 4,
        speedup_vs_folded=2.0,
        speedup_vs_folded_ci_low=1.9,
        speedup_vs_folded_ci_high=2.1,
        machine="amd-f25m1-avx2-2c (AMD EPYC 7B13)",
    )
    table = whole_model_speedups(whole)
    fused = table[(table["backend"] == "fused") & (table["batch"] == 1)].iloc[0]
    csr = table[(table["backend"] == "csr") & (table["batch"] == 1)].iloc[0]
    assert fused["vs dense [95% CI]"] == "2.50 [2.40, 2.60]"
    assert fused["vs folded [95% CI]"] == "2.00 [1.90, 2.10]"
    assert csr["vs dense [95% CI]"] == "no measurable difference [0.90, 1.10]"
    assert set(table["machine"]) == {"amd-f25m1-avx2-2c (AMD EPYC 7B13)"}
