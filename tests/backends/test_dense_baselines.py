"""The strong dense baselines: ``dense_kernel`` (hand-written C++) and ``dense_mkldnn`` (oneDNN
prepacked). The generic cross-check (test_cross_check.py) covers them like every backend; these
tests run every kernel variant, the odd shapes and strides, and the derived data (packs)."""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import backends
import backends.conv
from backends import dense_kernel
from backends.kernels import tune_cache

ROOT = Path(__file__).resolve().parents[2]
DENSE_BASELINES = ("dense", "dense_kernel", "dense_mkldnn")


def _layer(out_f: int, in_f: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g)
    mask = torch.rand(out_f, in_f, generator=g) < 0.3
    return weight, mask, torch.randn(out_f, generator=g)


def _within_bound(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> None:
    """|y - F.linear in float64| <= 2 (in + 1) eps (|W| @ |x| + |b|), elementwise."""
    ref = F.linear(x.double(), w.double(), b.double())
    mag = F.linear(x.double().abs(), w.double().abs(), b.double().abs())
    bound = 2 * (w.shape[1] + 1) * torch.finfo(torch.float32).eps * mag
    assert y.shape == ref.shape and y.dtype == torch.float32
    assert bool(((y.double() - ref).abs() <= bound).all()), (y.double() - ref).abs().max()


def _skip_unavailable(name: str) -> None:
    ok, why = backends.available(name, "cpu")
    if not ok:
        pytest.skip(f"{name}: {why}")


def test_dense_baselines_are_flagged_and_the_others_are_not():
    flagged = {n for n in backends.names() if backends.get(n).dense_baseline}
    assert flagged == set(DENSE_BASELINES)


@pytest.mark.parametrize("name", ["dense_kernel", "dense_mkldnn"])
def test_new_dense_baselines_refuse_other_dtypes_and_devices_with_a_reason(name):
    for dtype in (torch.bfloat16, torch.float16, torch.float64):
        ok, why = backends.get(name).supports("cpu", dtype)
        assert not ok and str(dtype) in why
    ok, why = backends.available(name, "cuda")
    assert not ok and "cuda" in why


@pytest.mark.parametrize("out_f,in_f", [(1, 1), (31, 7), (33, 257), (65, 600), (96, 513)])
@pytest.mark.parametrize("batch", [0, 1, 2, 3, 5, 7, 13, 256])
def test_every_dense_kernel_variant_matches_float64_linear(out_f, in_f, batch):
    _skip_unavailable("dense_kernel")
    w, _, b = _layer(out_f, in_f, seed=out_f + batch)
    pack = dense_kernel.pack_weight(w, b)
    x = torch.randn(batch, in_f)
    for code in dense_kernel.variants_here():
        y = dense_kernel.linear_variant(x, pack, out_f, code)
        _within_bound(y, x, w, b)


def test_dense_kernel_runs_every_simd_level_of_this_cpu_and_passed_its_self_check():
    _skip_unavailable("dense_kernel")
    ops = dense_kernel.load()
    assert dense_kernel.self_check_failures() == []
    assert int(ops.dense_isa()) == int(ops.dense_detected_isa())
    isas = {code // 1000 for code in dense_kernel.variants_here()}
    assert isas == set(range(int(ops.dense_detected_isa()) + 1))


@pytest.mark.parametrize("name", DENSE_BASELINES)
def test_dense_baseline_takes_strided_and_three_dim_inputs(name):
    _skip_unavailable(name)
    w, mask, b = _layer(45, 70)
    layer = backends.create(name, w, mask, b)
    wm = w * mask
    xt = torch.randn(70, 9).T  # [9, 70], column stride 9
    x3 = torch.randn(4, 3, 140)[:, :, ::2]  # [4, 3, 70], strided rows and columns
    with torch.inference_mode():
        _within_bound(layer(xt), xt, wm, b)
        y3 = layer(x3)
    assert y3.shape == (4, 3, 45)
    _within_bound(y3.reshape(12, 45), x3.reshape(12, 70), wm, b)


def test_dense_kernel_op_passes_opcheck_with_its_fake_implementation():
    _skip_unavailable("dense_kernel")
    w, _, b = _layer(40, 33)
    pack = dense_kernel.pack_weight(w, b)
    for x in (torch.randn(3, 33), torch.randn(2, 5, 33)):
        torch.library.opcheck(torch.ops.srigl_dense.dense_linear.default, (x, pack, 40))


@pytest.mark.parametrize("name", ["dense_kernel", "dense_mkldnn"])
def test_dense_baseline_rebuilds_its_pack_on_copy_pickle_and_load(name):
    _skip_unavailable(name)
    w, mask, b = _layer(37, 50)
    layer = backends.create(name, w, mask, b)
    x = torch.randn(6, 50)
    with torch.no_grad():
        want = layer(x)
        buf = io.BytesIO()
        torch.save(layer.state_dict(), buf)
        buf.seek(0)
        state = torch.load(buf, weights_only=True)
        assert set(state) == {"weight", "bias", "_extra_state"}  # the `dense` layout
        copies = [
            copy.deepcopy(layer),
            pickle.loads(pickle.dumps(layer)),
            backends.get(name).from_state_dict(state),
            backends.get("dense").from_state_dict(state),
        ]
        for other in copies:
            torch.testing.assert_close(other(x), want, rtol=1e-5, atol=1e-5)


def test_dense_mkldnn_packs_once_per_batch_bucket():
    _skip_unavailable("dense_mkldnn")
    w, mask, b = _layer(20, 30)
    layer = backends.create("dense_mkldnn", w, mask, b)
    with torch.no_grad():
        for batch in (1, 3, 4, 200, 256, 3):
            x = torch.randn(batch, 30)
            y = layer(x)
            _within_bound(y, x, w * mask, b)
    assert sorted(layer._packs) == [0, 2, 8]  # buckets of 1, 3-4, 129-256


def test_dense_kernel_tunes_once_per_bucket_and_reuses_the_machine_cache(tmp_path, monkeypatch):
    _skip_unavailable("dense_kernel")
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dense_kernel, "_TUNE", [True])
    dense_kernel._TUNE_CACHE.forget()
    w, mask, b = _layer(50, 41)
    layer = backends.create("dense_kernel", w, mask, b)
    x = torch.randn(5, 41)
    with torch.no_grad():
        _within_bound(layer(x), x, w * mask, b)
    code = layer.variant_code(5)
    assert code in dense_kernel.candidates(torch.get_num_threads())
    files = list((tmp_path / "tuner").glob("dense-*.json"))
    assert len(files) == 1 and "41x50:b3" in files[0].read_text()

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again despite the cache")

    monkeypatch.setattr(dense_kernel, "fastest_interleaved", no_timing)
    dense_kernel._TUNE_CACHE.forget()  # a new process: read from the file
    again = backends.create("dense_kernel", w, mask, b)
    assert again.variant_code(7) == code  # 5 and 7 share a bucket
    dense_kernel._TUNE_CACHE.forget()


def test_dense_kernel_times_again_an_entry_from_a_loaded_machine_or_naming_no_variant(
    tmp_path, monkeypatch
):
    _skip_unavailable("dense_kernel")
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dense_kernel, "_TUNE", [True])
    dense_kernel._TUNE_CACHE.forget()
    w, mask, b = _layer(50, 41)
    threads = torch.get_num_threads()
    backends.create("dense_kernel", w, mask, b).variant_code(5, threads)
    path = next((tmp_path / "tuner").glob("dense-*.json"))
    entry = json.loads(path.read_text())["entries"]["41x50:b3"]
    assert isinstance(entry["load_avg_1m"], (float, type(None)))  # the fused tuner's field
    timed = []
    real = dense_kernel.fastest_interleaved
    monkeypatch.setattr(dense_kernel, "fastest_interleaved", lambda *a: timed.append(1) or real(*a))
    cores = os.cpu_count() or 1

    def rewrite(value) -> None:
        data = json.loads(path.read_text())
        data["entries"]["41x50:b3"] = value
        path.write_text(json.dumps(data))
        dense_kernel._TUNE_CACHE.forget()

    rewrite({**entry, "load_avg_1m": 4.0 * cores})  # timed while very busy
    monkeypatch.setattr(tune_cache, "load_average", lambda: 0.0)  # quiet now
    assert backends.create("dense_kernel", w, mask, b).variant_code(5, threads) in (
        dense_kernel.candidates(threads)
    )
    assert timed
    timed.clear()
    if threads >= 2:  # timed while the host gave one core of two, which it gives now
        monkeypatch.setattr(tune_cache, "_cores_given", {})
        monkeypatch.setattr(tune_cache, "core_scaling", lambda n: 0.95 * n)
        rewrite({**entry, "load_avg_1m": 0.0, "cores_given": 1.0})
        backends.create("dense_kernel", w, mask, b).variant_code(5, threads)
        assert timed
        timed.clear()
    rewrite({"variant": -7})  # no variant of this machine
    with pytest.warns(tune_cache.TuneCacheWarning, match="41x50:b3"):
        backends.create("dense_kernel", w, mask, b).variant_code(5, threads)
    assert timed
    dense_kernel._TUNE_CACHE.forget()


def test_dense_kernel_without_tuning_runs_the_static_rule(monkeypatch):
    _skip_unavailable("dense_kernel")
    monkeypatch.setattr(dense_kernel, "_TUNE", [False])
    w, mask, b = _layer(40, 600)
    layer = backends.create("dense_kernel", w, mask, b)
    ops = dense_kernel.load()
    isa = dense_kernel.ISAS[int(ops.dense_isa())]
    par = "par" if torch.get_num_threads() > 1 else "ser"
    assert layer.variant_for(1) == f"{isa}/gemv/{par}"
    assert layer.variant_for(256) == f"{isa}/tilekb/{par}"  # 600 inputs > 2 chunks
    x = torch.randn(9, 600)
    with torch.no_grad():
        _within_bound(layer(x), x, w * mask, b)


@pytest.mark.slow
def test_dense_kernel_compiles_to_one_op_without_graph_breaks():
    _skip_unavailable("dense_kernel")
    w, mask, b = _layer(33, 20)
    layer = backends.create("dense_kernel", w, mask, b)
    compiled = torch.compile(layer, fullgraph=True)
    x = torch.randn(6, 20)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), layer(x), rtol=1e-5, atol=1e-5)


def test_dense_mkldnn_conv_matches_f_conv2d_across_sizes_layouts_and_a_reload():
    ok, why = backends.supports("dense_mkldnn", "cpu", torch.float32, op="conv2d")
    if not ok:
        pytest.skip(why)
    g = torch.Generator().manual_seed(3)
    weight = torch.randn(12, 3, 3, 3, generator=g)
    mask = torch.rand(12, 3, 3, 3, generator=g) < 0.4
    bias = torch.randn(12, generator=g)
    args = {"stride": 2, "padding": 1, "dilation": 1, "groups": 2}
    layer = backends.create("dense_mkldnn", weight, mask, bias, **args)
    inputs = [
        torch.randn(1, 6, 9, 11),
        torch.randn(5, 6, 9, 11).to(memory_format=torch.channels_last),
        torch.randn(3, 6, 8, 14)[..., ::2],  # strided
        torch.randn(0, 6, 9, 11),
    ]
    with torch.no_grad():
        for x in inputs:
            ref = F.conv2d(x.double(), (weight * mask).double(), bias.double(), **args)
            torch.testing.assert_close(layer(x).double(), ref, rtol=1e-5, atol=1e-4)
        state = layer.state_dict()
        dense = backends.conv.conv_class("dense").from_state_dict(state)
        torch.testing.assert_close(dense(inputs[0]), layer(inputs[0]), rtol=1e-5, atol=1e-5)
        again = pickle.loads(pickle.dumps(layer))
        torch.testing.assert_close(again(inputs[1]), layer(inputs[1]), rtol=1e-5, atol=1e-5)
    assert sorted(layer._packs) == [(0, 9, 11), (2, 8, 7), (3, 9, 11)]  # batch 1, 3, 5


@pytest.mark.parametrize("cap", ["generic", "avx2"])
def test_dense_kernel_layer_under_an_isa_cap_runs_only_that_level(cap):
    _skip_unavailable("dense_kernel")
    code = (
        "import torch, backends\n"
        "from backends import dense_kernel as dk\n"
        "w, b = torch.randn(70, 300), torch.randn(70)\n"
        "layer = backends.create('dense_kernel', w, torch.ones_like(w, dtype=torch.bool), b)\n"
        "x = torch.randn(9, 300)\n"
        "torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, w, b),\n"
        "                           rtol=1e-4, atol=1e-4)\n"
        "print(max(c // 1000 for c in dk.variants_here()), layer.variant_for(9))\n"
    )
    env = {**os.environ, "SRIGL_ISA": cap}
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    level, name = res.stdout.split()
    want = min(dense_kernel.ISAS.index(cap), int(dense_kernel.load().dense_detected_isa()))
    assert int(level) == want and name.startswith(dense_kernel.ISAS[want] + "/")


@pytest.mark.parametrize("name", ["dense_kernel", "dense_mkldnn"])
def test_dense_baseline_gives_the_input_gradient_of_the_masked_linear(name):
    """An input that requires grad gets the gradient of x @ (w * mask).T + b (the C++ dense
    op has no backward formula: without the differentiable path x.grad stayed None, with only
    a warning)."""
    _skip_unavailable(name)
    w, mask, b = _layer(13, 37, seed=4)
    layer = backends.create(name, w, mask, b)
    x = torch.randn(5, 37, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    layer(x).pow(2).sum().backward()
    F.linear(ref_x, w * mask, b).pow(2).sum().backward()
    assert x.grad is not None, f"{name}: no gradient reached x"
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-4, atol=1e-4)


def test_dense_mkldnn_conv_gives_the_input_gradient_of_the_masked_conv():
    """The oneDNN convolution op passes no gradient to x: an input that requires grad runs
    the masked dense F.conv2d instead and gets its gradient."""
    ok, why = backends.supports("dense_mkldnn", "cpu", torch.float32, op="conv2d")
    if not ok:
        pytest.skip(why)
    g = torch.Generator().manual_seed(5)
    weight, bias = torch.randn(8, 4, 3, 3, generator=g), torch.randn(8, generator=g)
    mask = torch.rand(8, 4, 3, 3, generator=g) < 0.5
    args = {"stride": 1, "padding": 1, "dilation": 1, "groups": 1}
    layer = backends.create("dense_mkldnn", weight, mask, bias, **args)
    x = torch.randn(2, 4, 7, 7, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_(True)
    layer(x).pow(2).sum().backward()
    F.conv2d(ref_x, weight * mask, bias, **args).pow(2).sum().backward()
    assert x.grad is not None, "dense_mkldnn conv: no gradient reached x"
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-4, atol=1e-4)
