"""The ``fused`` layer on CPU: index width, variant choice, transposed path, rebuilding its
pack, the numba fallback, and tracing by torch.compile / torch.export."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from backend_cases import CASES, Case, constant_fan_in_layer, error_bound
from torch import nn

import backends
from backends.kernels import ops
from backends.kernels.build import KernelUnavailableError

pytestmark = pytest.mark.skipif(
    not backends.available("fused", "cpu")[0], reason=backends.available("fused", "cpu")[1]
)
needs_cpp = pytest.mark.skipif(not ops.available()[0], reason=f"C++ kernel: {ops.available()[1]}")


def _within_bound(y, x, weight, mask, bias, k):
    ref, bound = error_bound(x, weight, mask, bias, k)
    return bool(((y.double() - ref).abs() <= bound).all())


@pytest.mark.parametrize(
    "in_features,expected", [(37, torch.int16), (32767, torch.int16), (32768, torch.int32)]
)
def test_fused_keeps_int16_indices_below_32768_inputs_else_int32(in_features, expected):
    case = Case("width", in_features, 3, 2, 3, (1,))
    weight, mask, bias = constant_fan_in_layer(case, 0)
    layer = backends.create("fused", weight, mask, bias)
    assert layer.kernel_indices.dtype == expected
    if layer._cpp:
        assert list(ops.load().fused_pack_info(layer.kernel_blob))[4] == expected.itemsize
    x = torch.randn(2, in_features)
    torch.testing.assert_close(layer(x), F.linear(x, weight * mask, bias))


BATCHES = [0, 1, 2, 7, 8, 9, 17, 33, 100, 197]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", [CASES[0], CASES[7]], ids=lambda c: c.name)
def test_fused_agrees_with_reference_at_every_batch_size(case, batch):
    weight, mask, bias = constant_fan_in_layer(case, batch)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    assert _within_bound(layer(x), x, weight, mask, bias, case.k)


@pytest.mark.parametrize("batch", [1, 5, 32, 70])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7]], ids=lambda c: c.name)
def test_forward_transposed_takes_in_by_batch_and_returns_out_by_batch(case, batch):
    weight, mask, bias = constant_fan_in_layer(case, 11)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    yt = layer.forward_transposed(x.T.contiguous())
    assert yt.shape == (case.out_features, batch)
    assert _within_bound(yt.T, x, weight, mask, bias, case.k)


def test_forward_transposed_rejects_untransposed_input():
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    layer = backends.create("fused", weight, mask, bias, layer_name="fc")
    with pytest.raises(ValueError, match=r"'fc'.*\[37, B\].*\[4, 37\]"):
        layer.forward_transposed(torch.randn(4, 37))


def test_fused_accepts_inputs_that_require_grad_for_inference():
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(3, 37, requires_grad=True)
    torch.testing.assert_close(layer(x), F.linear(x, weight * mask, bias).detach())


def test_fused_runs_under_inference_mode_and_on_batched_noncontiguous_input():
    case = CASES[7]
    weight, mask, bias = constant_fan_in_layer(case, 2)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(2, 5, 2 * case.in_features)[..., ::2]
    with torch.inference_mode():
        y = layer(x)
    assert y.shape == (2, 5, case.out_features)
    assert _within_bound(y.reshape(10, -1), x.reshape(10, -1), weight, mask, bias, case.k)


@needs_cpp
def test_variant_for_names_the_kernel_that_runs_and_tuning_off_uses_the_static_rule(
    monkeypatch,
):
    monkeypatch.setenv("SRIGL_TUNE", "off")
    from backends.kernels import linear_tuner as tuner

    tuner.refresh()
    try:
        weight, mask, bias = constant_fan_in_layer(CASES[7], 0)
        layer = backends.create("fused", weight, mask, bias)
        isa = ops.ISAS[int(ops.load().fused_isa())]
        small, large = layer.variant_for(1, threads=2), layer.variant_for(256, threads=1)
        if isa == "generic":
            assert small == "generic/rows/par"
        else:
            lanes, block = layer.perm_geometry
            assert small == f"{isa}/perm{lanes}x{block}/par"
        assert large.startswith(f"{isa}/tiled") and large.endswith("/ser")
        layer(torch.randn(3, CASES[7].in_features))
        assert not layer._tuned  # nothing was timed
    finally:
        monkeypatch.delenv("SRIGL_TUNE")
        tuner.refresh()


@needs_cpp
def test_pack_is_rebuilt_by_deepcopy_to_and_load_state_dict():
    case = CASES[7]
    weight, mask, bias = constant_fan_in_layer(case, 4)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(3, case.in_features)
    y = layer(x)
    clone = copy.deepcopy(layer)
    assert clone.kernel_blob.data_ptr() != layer.kernel_blob.data_ptr()
    torch.testing.assert_close(clone(x), y, rtol=0, atol=0)
    moved = copy.deepcopy(layer).to(torch.float32)
    torch.testing.assert_close(moved(x), y, rtol=0, atol=0)
    weight2, mask2, bias2 = constant_fan_in_layer(Case("other", 768, 50, 40, 45, ()), 9)
    other = backends.create("fused", weight2, mask2, bias2)
    layer.load_state_dict(other.state_dict())
    assert _within_bound(layer(x), x, weight2, mask2, bias2, 40)
    assert layer.state_dict().keys() == other.state_dict().keys()  # no derived buffers


def test_fallback_to_numba_when_the_cpp_kernel_cannot_be_built(monkeypatch):
    pytest.importorskip("numba")

    def no_compiler():
        raise KernelUnavailableError("no C++ compiler found (simulated)")

    monkeypatch.setattr(ops, "load", no_compiler)
    ok, why = backends.available("fused", "cpu")
    assert ok and "C++ kernel unavailable (no C++ compiler found (simulated))" in why
    assert "numba kernel serves" in why
    for case in (CASES[0], CASES[7]):
        weight, mask, bias = constant_fan_in_layer(case, 1)
        layer = backends.create("fused", weight, mask, bias)
        assert not layer._cpp and layer._numba is not None
        for batch in (1, 3, 17):
            x = torch.randn(batch, case.in_features)
            assert _within_bound(layer(x), x, weight, mask, bias, case.k)
            assert layer.variant_for(batch).startswith("numba/")
        yt = layer.forward_transposed(x.T.contiguous())
        assert _within_bound(yt.T, x, weight, mask, bias, case.k)


@pytest.mark.parametrize("serial_max_macs", [0, 2**40], ids=["parallel", "serial"])
def test_numba_fallback_serial_and_parallel_row_kernels_match_reference(
    monkeypatch, serial_max_macs
):
    pytest.importorskip("numba")
    from backends import fused_cpu

    monkeypatch.setattr(fused_cpu, "SERIAL_MAX_MACS", serial_max_macs)
    case = CASES[7]
    weight, mask, bias = constant_fan_in_layer(case, 21)
    layer = backends.create("fused", weight, mask, bias)
    numba_layer = fused_cpu.NumbaCondensed(
        layer.values, layer.kernel_indices, layer.active, layer.bias, layer._all_active
    )
    for batch in (1, 3):
        x = torch.randn(batch, case.in_features)
        assert _within_bound(numba_layer.linear(x), x, weight, mask, bias, case.k)


def _condensed_mlp():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(96, 200), nn.GELU(), nn.Linear(200, 40))
    layers = []
    for lin in (mlp[0], mlp[2]):
        out_f, in_f = lin.weight.shape
        k = max(1, in_f // 10)
        cols = torch.rand(out_f, in_f).argsort(dim=1)[:, :k]
        mask = torch.zeros(out_f, in_f, dtype=torch.bool).scatter_(1, cols, True)
        mask[3] = False  # an ablated neuron
        layers.append(backends.create("fused", lin.weight.detach(), mask, lin.bias.detach()))
    return nn.Sequential(layers[0], nn.GELU(), layers[1]).eval()


@needs_cpp
def test_torch_compile_keeps_the_fused_op_without_graph_breaks():
    model = _condensed_mlp()
    x = torch.randn(5, 96)
    expected = model(x)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), expected)
    explanation = torch._dynamo.explain(model)(x)
    assert explanation.graph_break_count == 0
    assert "srigl.fused_linear" in str(explanation.graphs[0].graph)


@needs_cpp
def test_torch_export_of_a_condensed_mlp_keeps_the_fused_op():
    model = _condensed_mlp()
    x = torch.randn(4, 96)
    batch = torch.export.Dim("batch", min=1, max=1024)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    assert "srigl.fused_linear" in str(exported.graph)
    for rows in (1, 4, 300):  # any batch: the variant is chosen inside the operator
        x = torch.randn(rows, 96)
        torch.testing.assert_close(exported.module()(x), model(x))


@needs_cpp
@pytest.mark.parametrize("batch", [1, 256])
def test_layer_call_allocates_only_its_output(batch):
    from torch.profiler import ProfilerActivity, profile

    case = CASES[7]
    weight, mask, bias = constant_fan_in_layer(case, 0)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    layer(x)  # tuned and warm
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        y = layer(x)
    allocs = [e for e in prof.events() if e.cpu_memory_usage > 0 and e.name.startswith("aten::")]
    assert len(allocs) == 1, [(e.name, e.cpu_memory_usage) for e in allocs]
    assert allocs[0].cpu_memory_usage == y.numel() * y.element_size()


@pytest.mark.slow
@needs_cpp
def test_torch_compile_with_inductor_runs_the_fused_op():
    model = _condensed_mlp()
    x = torch.randn(3, 96)
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@needs_cpp
def test_a_layer_built_under_inference_mode_tunes_and_runs_outside_it():
    weight, mask, bias = constant_fan_in_layer(CASES[7], 5)
    with torch.inference_mode():
        layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(3, CASES[7].in_features)
    assert _within_bound(layer(x), x, weight, mask, bias, CASES[7].k)
    with torch.inference_mode():
        assert _within_bound(layer(x), x, weight, mask, bias, CASES[7].k)


def _direct_layer():
    g = torch.Generator().manual_seed(11)
    w = torch.randn(24, 40, generator=g)
    mask = torch.zeros(24, 40, dtype=torch.bool)
    mask[:, 1::4] = True
    return backends.create("fused", w, mask, torch.randn(24, generator=g)), w * mask


@needs_cpp
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_the_direct_entry_gives_the_operators_bits_in_every_grad_mode(mode, monkeypatch):
    import backends.fused as fused_mod

    layer, _ = _direct_layer()
    x = torch.randn(5, 3, 40)
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}
    calls = []
    direct = fused_mod._OPS["direct"]
    monkeypatch.setitem(fused_mod._OPS, "direct", lambda *a: calls.append(1) or direct(*a))
    with ctx[mode]():
        got = layer(x)
        monkeypatch.setattr(fused_mod, "direct_ok", lambda x: False)
        want = layer(x)
    assert calls == [1], "a plain tensor that needs no gradient did not take the direct entry"
    assert torch.equal(got, want) and got.shape == (5, 3, 24)
    assert got.is_inference() == (mode == "inference") and not got.requires_grad


@needs_cpp
@pytest.mark.parametrize("mode", ["grad", "no_grad", "inference"])
def test_the_transposed_forward_takes_the_direct_entry_with_the_operators_bits(mode, monkeypatch):
    """forward_transposed (xt [in, B] -> [out, B]) takes the direct entry (transposed=True)
    where the operator would do nothing more, with the same bits; an xt that requires grad
    still gets its gradient through the operator."""
    import backends.fused as fused_mod

    layer, dense = _direct_layer()
    xt = torch.randn(40, 7)
    ctx = {"grad": torch.enable_grad, "no_grad": torch.no_grad, "inference": torch.inference_mode}
    calls = []
    direct = fused_mod._OPS["direct"]
    monkeypatch.setitem(fused_mod._OPS, "direct", lambda *a: calls.append(a[-1]) or direct(*a))
    with ctx[mode]():
        got = layer.forward_transposed(xt)
        monkeypatch.setattr(fused_mod, "direct_ok", lambda x: False)
        want = layer.forward_transposed(xt)
    assert calls == [True], "the transposed forward did not take the direct entry"
    assert torch.equal(got, want) and got.shape == (24, 7)
    torch.testing.assert_close(got, dense @ xt + layer.bias[:, None], rtol=1e-5, atol=1e-5)
    if mode == "grad":
        monkeypatch.undo()
        leaf = xt.clone().requires_grad_()
        layer.forward_transposed(leaf).sum().backward()
        torch.testing.assert_close(leaf.grad, dense.sum(0)[:, None].expand(40, 7))


@needs_cpp
@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::torch.jit.TracerWarning")
def test_the_operator_runs_where_something_above_the_dispatcher_watches():
    from backends.hot_path import direct_ok

    layer, _ = _direct_layer()
    x = torch.randn(2, 40)
    assert direct_ok(x)
    assert not direct_ok(x.requires_grad_())  # autograd needs the operator's formula
    assert not direct_ok(nn.Parameter(torch.randn(2, 40)))  # a subclass
    x = torch.randn(2, 40)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        assert not direct_ok(x)
        layer(x)
    assert any("srigl::fused_linear" in e.name for e in prof.events())
    traced = torch.jit.trace(layer, (x,), check_trace=False)
    assert "srigl::fused_linear" in str(traced.graph)


@needs_cpp
def test_the_direct_entry_refuses_bad_arguments_in_one_line():
    layer, _ = _direct_layer()
    direct = ops.direct_linear()
    with pytest.raises(TypeError, match="4 arguments|arguments given"):
        direct(torch.randn(1, 40))
    with pytest.raises(TypeError, match="argument 1 must be a tensor"):
        direct(torch.randn(1, 40), "blob", layer.variant_table, 24)
    with pytest.raises(RuntimeError, match="float32 CPU input"):
        direct(torch.randn(1, 40, dtype=torch.float64), layer.kernel_blob, layer.variant_table, 24)
