"""The whole-model bench: every experiment's model with its own SRigL masks, condensed vs the
dense eval model and the BN-folded dense model, with params, FLOPs and bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from backends.registry import UnknownNameError
from suite.bench.app import run_bench
from suite.bench.whole_model import EXPERIMENTS, bench_whole_model, experiment_model

from .test_app import bench_cfg


def _bench_cpu_batch_1(name, model, masks, input_shape, backend_names, **kw):
    """:func:`bench_whole_model` at batch 1 on one CPU thread, unstructured at 90%, float32."""
    return bench_whole_model(
        name,
        model,
        masks,
        input_shape,
        [1],
        backend_names,
        structured=False,
        sparsity=0.9,
        threads=1,
        min_run_time=0.01,
        device=torch.device("cpu"),
        dtype=torch.float32,
        **kw,
    )


def test_experiment_model_uses_the_experiments_input_size_and_srigl_masks():
    setup = experiment_model("cifar10_resnet18", 0.9, seed=0)
    assert setup.model_name == "resnet18_cifar" and setup.input_shape == (3, 32, 32)
    convs = [n for n, m in setup.model.named_modules() if isinstance(m, nn.Conv2d)]
    # ERK makes the small stem and 1x1 shortcut convs dense (no mask); the rest is sparse
    assert set(setup.masks) <= {f"{n}.weight" for n in convs} | {"fc.weight"}
    assert len(setup.masks) >= 15
    total = sum(m.numel() for m in setup.masks.values())
    density = sum(int(m.sum()) for m in setup.masks.values()) / total
    assert density == pytest.approx(0.1, abs=0.01)
    densities = {round(float(m.float().mean()), 3) for m in setup.masks.values()}
    assert len(densities) > 3  # ERK: layer densities differ
    for name, mask in setup.masks.items():  # constant fan-in per output channel
        counts = mask.flatten(1).sum(1)
        assert counts[counts > 0].unique().numel() == 1, name


def test_unknown_experiment_is_an_error_naming_it():
    with pytest.raises(ValueError, match="no_such_experiment"):
        experiment_model("no_such_experiment", 0.9)


def test_every_paper_pair_is_covered_by_default(tmp_path):
    """The bench's own default (bench.yaml) runs the six pairs of the paper."""
    default = list(bench_cfg(tmp_path).whole_model_options.experiments)
    assert sorted(default) == sorted(EXPERIMENTS) and len(EXPERIMENTS) == 6


def test_whole_cnn_is_timed_against_dense_eval_and_bn_folded_dense():
    setup = experiment_model("cifar10_resnet18", 0.9, seed=0)
    skipped: dict[str, str] = {}
    results = _bench_cpu_batch_1(
        setup.model_name,
        setup.model,
        setup.masks,
        setup.input_shape,
        ["fused", "no_such_backend_is_skipped"],
        rounds=2,
        skipped=skipped,
        experiment=setup.experiment,
    )
    assert "resnet18_cifar/no_such_backend_is_skipped" in skipped
    aa, r = results  # per batch: the A/A control first, then each backend
    assert aa["backend"] == "dense_aa" and aa["speedup_ci_low"] <= aa["speedup"]
    assert r["experiment"] == "cifar10_resnet18" and r["backend"] == "fused"
    assert r["median_s"] > 0 and r["dense_median_s"] > 0 and r["folded_median_s"] > 0
    # paired: vs dense and vs BN-folded, each with its interval, from the same two rounds
    assert r["n_pairs"] == 2 == len(r["samples_s"]) == len(r["folded_samples_s"])
    assert r["speedup_ci_low"] <= r["speedup"] <= r["speedup_ci_high"]
    assert r["speedup_vs_folded_ci_low"] <= r["speedup_vs_folded"]
    assert r["speedup_vs_folded"] <= r["speedup_vs_folded_ci_high"]
    assert r["condensed_layers"] == len(setup.masks) and r["kept_layers"] == []
    assert r["epilogues_fused"] > 0  # its ReLUs and skip adds run in the convs
    assert 0.95 < r["condensed_weight_fraction"] < 1.0  # ERK's dense layers stay dense
    assert r["params_condensed"] < 0.2 * r["params_dense"]
    assert r["flops_condensed"] < 0.3 * r["flops_dense"]
    assert r["bytes_condensed"] < 0.3 * r["bytes_dense"]


def test_bench_app_runs_the_whole_model_part_on_an_experiment(tmp_path):
    cfg = bench_cfg(
        tmp_path,
        "whole_model=true",
        "whole_model_options.experiments=[digits_cnn]",
        "whole_model_options.models=[]",
        "whole_model_options.batches=[1,2]",
        "whole_model_options.sparsities=[0.8,0.9]",
        "whole_model_options.backends=[naive,fused]",
        "backends=[dense]",  # the whole-model list does not have to be in the grid's
    )
    record, _ = run_bench(cfg)
    whole = record["metrics"]["whole_model"]
    keys = {(w["experiment"], w["backend"], w["batch"], w["sparsity"]) for w in whole}
    assert keys == {
        ("digits_cnn", b, n, s)
        for b in ("naive", "fused", "dense_aa")
        for n in (1, 2)
        for s in (0.8, 0.9)
    }
    for w in whole:  # no BatchNorm, but a max-pooling: the folded baseline has its own timing
        if w["backend"] == "dense_aa":  # the A/A control: dense against a copy of itself
            assert w["condensed_layers"] == 0 and w["n_pairs"] == len(w["dense_samples_s"])
            continue
        assert w["folded_samples_s"] != w["dense_samples_s"] and w["condensed_layers"] >= 2
        assert len(w["folded_samples_s"]) == w["n_pairs"]


def test_an_unknown_whole_model_backend_is_an_error_before_any_timing(tmp_path, monkeypatch):
    import suite.bench.layers as layers

    def no_grid(*args, **kwargs):
        raise AssertionError("the layer grid ran before the config was checked")

    monkeypatch.setattr(layers, "bench_layer", no_grid)
    cfg = bench_cfg(tmp_path, "whole_model=true", "whole_model_options.backends=[fused,fusd]")
    with pytest.raises(UnknownNameError, match="fusd"):
        run_bench(cfg)
    assert not list(tmp_path.rglob("bench-*.json"))


def test_fewer_than_two_rounds_is_an_error_before_any_model_is_built():
    from backends.timing import TimingError

    with pytest.raises(TimingError, match="rounds=1 is invalid; allowed: an integer >= 2"):
        _bench_cpu_batch_1("never_built", None, {}, (1,), ["dense"], rounds=1)


def test_folded_baseline_pools_as_the_condensed_model_does():
    """Max-pooling runs channels-last in the condensed model (srigl.pooling), so the folded
    baseline does too, and a model with a pooling but no BatchNorm gets its own folded timing."""
    from srigl.pooling import ChannelsLastMaxPool2d
    from suite.bench.whole_model import _prepare

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1), nn.Conv2d(16, 8, 1)
    ).eval()
    masks = {"3.weight": torch.rand(8, 16, 1, 1) < 0.5}
    skipped: dict[str, str] = {}
    prep = _prepare(
        "toy", model, masks, (3, 8, 8), ["structured"], False, torch.device("cpu"),
        torch.float32, skipped,
    )  # fmt: skip
    assert not skipped and prep.n_rewrites == 1  # no BN, one pooling rewritten
    assert type(prep.folded[2]) is ChannelsLastMaxPool2d
    assert type(prep.dense[2]) is nn.MaxPool2d  # the dense eval model stays as users run it
    assert type(prep.smalls["structured"][2]) is ChannelsLastMaxPool2d
    plain = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Identity(), nn.Conv2d(16, 8, 1)).eval()
    prep = _prepare(
        "plain", plain, masks, (3, 8, 8), ["structured"], False, torch.device("cpu"),
        torch.float32, skipped,
    )  # fmt: skip
    assert prep.n_rewrites == 0  # nothing rewritten: the folded form is timed as the dense one
