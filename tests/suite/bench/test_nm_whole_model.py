"""suite.bench.nm_whole_model: whole models condensed with N:M vs constant fan-in masks."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from suite.bench import resolve_settings, run_bench
from suite.bench.nm_whole_model import bench_nm_whole_model, nm_model_masks
from tests.suite.bench.test_app import CONF, bench_cfg

TIMING = {"pairs": 3, "block_seconds": 1e-4, "threads": 1, "seed": 0}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3),  # fan-in 9: no multiple of 4, dense in both models
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 16),
        nn.ReLU(),
        nn.Linear(16, 10),
    ).eval()


def test_nm_model_masks_pair_each_nm_mask_with_a_constant_fan_in_mask_of_the_same_k():
    nm, fan_in = nm_model_masks(_model(), (1, 4), torch.Generator().manual_seed(0))
    assert set(nm) == set(fan_in) == {"3.weight", "5.weight"}
    for key, mask in nm.items():
        width = mask.shape[1]
        assert (mask.reshape(-1, 4).sum(1) == 1).all()  # 1 kept in every group of 4 inputs
        assert (fan_in[key].sum(1) == width // 4).all()  # the same k per neuron
        assert not (fan_in[key].reshape(-1, 4).sum(1) == 1).all()  # at random positions


def test_whole_model_nm_rows_carry_speedup_vs_fan_in_with_its_interval_and_an_aa_control():
    skipped: dict[str, str] = {}
    rows = bench_nm_whole_model(
        "tiny",
        _model(),
        (1, 8, 8),
        (2, 4),
        [1, 3],
        ["naive", "dense_kernel"],  # dense_kernel condenses no Conv2d: still a Linear model
        TIMING,
        device=torch.device("cpu"),
        dtype=torch.float32,
        skipped=skipped,
    )
    aa = [r for r in rows if r["backend"] == "dense_aa"]
    nm = [r for r in rows if r["backend"] != "dense_aa"]
    assert [r["batch"] for r in aa] == [1, 3]
    assert nm and {r["batch"] for r in nm} == {1, 3}
    for r in nm:
        assert (r["pattern"], r["nm_pair"], r["sparsity"], r["nm_layers"]) == ("2:4", "2:4", 0.5, 2)
        low, est, high = (r[f"speedup_vs_fan_in{s}"] for s in ("_ci_low", "", "_ci_high"))
        assert 0 < low <= est <= high and est == r["speedup"]
    assert len(nm) + len([k for k in skipped if k.startswith("tiny/2:4/")]) == 2 * 2


def test_nm_whole_model_is_on_in_profile_nm_and_off_in_quick():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        quick = compose("bench", overrides=["profile=quick"])
        nm = compose("bench", overrides=["profile=nm"])
        forced = compose("bench", overrides=["profile=quick", "nm_whole_model=true"])
    assert not resolve_settings(quick).nm_whole_model
    assert resolve_settings(nm).nm_whole_model
    assert resolve_settings(forced).nm_whole_model


@pytest.mark.filterwarnings("ignore")
def test_bench_with_nm_whole_model_records_the_rows_in_the_metrics(tmp_path):
    cfg = bench_cfg(
        tmp_path,
        "nm_whole_model=true",
        "nm_whole_model_options.experiments=[digits_mlp]",
        "nm_whole_model_options.patterns=['1:4']",
        "nm_whole_model_options.batches=[2]",
        "nm_whole_model_options.backends=[naive]",
        "nm_whole_model_options.pairs=2",
    )
    record, _ = run_bench(cfg)
    rows = record["metrics"]["nm_whole_model"]
    assert {r["backend"] for r in rows} == {"dense_aa", "naive"}
    assert all(r["experiment"] == "digits_mlp" and r["pattern"] == "1:4" for r in rows)
