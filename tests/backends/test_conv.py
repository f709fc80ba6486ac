"""Every backend's Conv2d computes F.conv2d(x, weight * mask, bias, ...) within a rounding bound,
rejects bad inputs clearly and saves/loads."""

from __future__ import annotations

import copy
import io
import json
import textwrap

import pytest
import torch
import torch.nn.functional as F
from backend_cases import run_under_triton_interpreter
from conv_cases import CONV_CASES, ConvCase, conv_error_bound, conv_input, conv_layer

import backends
from backends.base import BadInputError
from backends.condensed import FanInError
from backends.conv import CondensedConv2d, ConvBackend, conv_class


def _skip_unless(name: str, dtype: torch.dtype = torch.float32) -> None:
    ok, why = backends.supports(name, "cpu", dtype, op="conv2d")
    if not ok:
        pytest.skip(f"{name} conv on cpu/{dtype}: {why}")


def _params():
    for name in backends.names():
        cls = conv_class(name)
        slow = getattr(cls, "slow_to_build", False)
        for case in CONV_CASES:
            quick = case is CONV_CASES[2]
            marks = [pytest.mark.slow] if slow and not quick else []
            yield pytest.param(name, case, marks=marks, id=f"{name}-{case.name}")


@pytest.mark.parametrize("name,case", list(_params()))
def test_conv_backend_matches_float64_conv2d_within_rounding_bound(name, case: ConvCase):
    _skip_unless(name)
    weight, mask, bias = conv_layer(case, 0)
    layer = backends.create(name, weight, mask, bias, layer_name=case.name, **case.conv_args)
    assert isinstance(layer, ConvBackend)
    x = conv_input(case, 0)
    with torch.no_grad():
        y = layer(x)
    k = case.fan_in if case.k is None else case.k
    ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, k)
    assert y.shape == ref.shape and y.dtype == x.dtype
    worst = ((y.double() - ref).abs() - bound).max() if y.numel() else torch.tensor(0.0)
    assert worst <= 0, f"error exceeds bound by {worst.item():.3g}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ["dense", "structured", "naive", "coo"])
def test_conv_backends_in_half_precision(name, dtype):
    _skip_unless(name, dtype)
    case = CONV_CASES[3]
    weight, mask, bias = conv_layer(case, 1, dtype)
    layer = backends.create(name, weight, mask, bias, **case.conv_args)
    x = conv_input(case, 1, dtype)
    with torch.no_grad():  # supports() said it runs: an error here is a failure, not a skip
        y = layer(x)
    ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, case.k)
    assert bool(((y.double() - ref).abs() <= bound).all())


def test_every_backend_has_a_conv_module_or_says_why_not():
    for name in backends.names():
        ok, why = backends.supports(name, "cpu", torch.float32, op="conv2d")
        assert conv_class(name) is not None or (not ok and why), name
        assert ok or why, f"{name}: unsupported without a reason"
    with pytest.raises(ValueError, match="op must be"):
        backends.supports("dense", "cpu", torch.float32, op="conv3d")


def test_ablated_channels_output_their_bias_and_no_bias_means_zero():
    case = CONV_CASES[2]
    weight, mask, bias = conv_layer(case, 2)
    for name in ("structured", "naive", "fused"):
        _skip_unless(name)
        layer = backends.create(name, weight, mask, bias, **case.conv_args)
        y = layer(conv_input(case, 2))
        ablated = ~mask.flatten(1).any(dim=1)
        assert int(ablated.sum()) == case.ablated
        assert torch.equal(y[:, ablated], bias[ablated].view(1, -1, 1, 1).expand_as(y[:, ablated]))
        nobias = backends.create(name, weight, mask, None, **case.conv_args)
        assert bool((nobias(conv_input(case, 2))[:, ablated] == 0).all())


@pytest.mark.parametrize("name", ["naive", "csr", "coo", "fused"])
def test_conv_rejects_non_constant_fan_in_naming_the_layer(name):
    _skip_unless(name)
    weight = torch.randn(3, 2, 3, 3)
    mask = torch.zeros(3, 18, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :6] = True
    with pytest.raises(FanInError, match=r"'layer1\.0\.conv1'.*4\.\.6"):
        backends.create(name, weight, mask.reshape(3, 2, 3, 3), None, layer_name="layer1.0.conv1")


@pytest.mark.parametrize("name", ["dense", "naive", "fused"])
def test_conv_bad_inputs_name_expected_and_got(name):
    _skip_unless(name)
    case = CONV_CASES[2]
    weight, mask, bias = conv_layer(case, 0)
    layer = backends.create(name, weight, mask, bias, layer_name="conv", **case.conv_args)
    with pytest.raises(BadInputError, match=r"'conv'.*\[N, 8, H, W\].*\[2, 8, 9\]"):
        layer(torch.randn(2, 8, 9))
    with pytest.raises(BadInputError, match=r"\[N, 8, H, W\].*\[2, 7, 9, 9\]"):
        layer(torch.randn(2, 7, 9, 9))
    with pytest.raises(TypeError, match="expected input dtype torch.float32, got torch.float64"):
        layer(torch.randn(2, 8, 9, 9, dtype=torch.float64))
    with pytest.raises(BadInputError, match="too small"):
        backends.create(name, weight, mask, bias)(torch.randn(1, 8, 2, 2))
    with pytest.raises(BadInputError, match="padding_mode='zeros' only, got 'reflect'"):
        backends.create(name, weight, mask, bias, padding=1, padding_mode="reflect")
    with pytest.raises(BadInputError, match="stride must be an int or a pair"):
        backends.create(name, weight, mask, bias, stride=0)
    with pytest.raises(BadInputError, match=r"unknown Conv2d option\(s\) \['strides'\]"):
        backends.create(name, weight, mask, bias, strides=2)
    linear = (weight.flatten(1), mask.flatten(1), bias)
    with pytest.raises(BadInputError, match=r"Linear layer .* takes no options, got \['stride'\]"):
        backends.create(name, *linear, stride=2)
    with pytest.raises(BadInputError, match="not divisible by groups=3"):
        backends.create(name, weight, mask, bias, groups=3)
    with pytest.raises(BadInputError, match="mask must have the weight's shape"):
        backends.create(name, weight, mask[:, :, :2], bias)
    with pytest.raises(BadInputError, match="only 0 and 1"):
        backends.create(name, weight, mask.float() * 0.5, bias)
    x = torch.randn(1, 8, 5, 5)
    with torch.no_grad():  # a 0/1 float mask is the bool one: the same layer, the same output
        assert torch.equal(
            backends.create(name, weight, mask.float(), bias)(x),
            backends.create(name, weight, mask, bias)(x),
        )


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_condensed_conv_state_dict_loads_into_every_condensed_backend():
    case = CONV_CASES[5]  # groups, stride, ablated channels
    weight, mask, bias = conv_layer(case, 3)
    x = conv_input(case, 3)
    ref = F.conv2d(x, weight * mask, bias, **case.conv_args)
    saved = _roundtrip(backends.create("naive", weight, mask, bias, **case.conv_args).state_dict())
    for name in backends.names():
        cls = conv_class(name)
        if cls is None or not issubclass(cls, CondensedConv2d):
            continue
        ok, _ = backends.supports(name, "cpu", torch.float32, op="conv2d")
        if not ok or getattr(cls, "slow_to_build", False):
            continue
        rebuilt = cls.from_state_dict(saved)
        torch.testing.assert_close(rebuilt(x), ref, rtol=1e-4, atol=1e-4)
        other = backends.create(name, *conv_layer(CONV_CASES[5], 9), **case.conv_args)
        other.load_state_dict(saved)
        torch.testing.assert_close(other(x), ref, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(copy.deepcopy(other)(x), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["dense", "structured"])
def test_dense_conv_state_dict_round_trip(name):
    case = CONV_CASES[7]
    weight, mask, bias = conv_layer(case, 4)
    layer = backends.create(name, weight, mask, bias, **case.conv_args)
    x = conv_input(case, 4)
    rebuilt = conv_class(name).from_state_dict(_roundtrip(layer.state_dict()))
    torch.testing.assert_close(rebuilt(x), layer(x))


def test_from_state_dict_rejects_a_linear_state_and_bad_geometry():
    case = CONV_CASES[2]
    layer = backends.create("naive", *conv_layer(case, 0), **case.conv_args)
    lin = backends.create("naive", torch.randn(4, 6), torch.ones(4, 6), None)
    cls = conv_class("naive")
    with pytest.raises(ValueError, match="lacks the conv geometry"):
        cls.from_state_dict(lin.state_dict())
    state = layer.state_dict()
    state["_extra_state"] = dict(state["_extra_state"], kernel_size=[5, 5])
    with pytest.raises(ValueError, match="inconsistent conv geometry"):
        cls.from_state_dict(state)
    state = layer.state_dict()
    state["indices"] = state["indices"] + 1000
    with pytest.raises(ValueError, match="indices"):
        cls.from_state_dict(state)


INTERPRETED = textwrap.dedent(
    """
    import sys, torch
    sys.path.insert(0, {tests!r})
    import backends
    from conv_cases import CONV_CASES, conv_error_bound, conv_input, conv_layer
    ok, why = backends.supports("fused_triton", "cpu", torch.float32, op="conv2d")
    assert ok, why
    for case in CONV_CASES[:8]:
        weight, mask, bias = conv_layer(case, 0)
        layer = backends.create("fused_triton", weight, mask, bias, **case.conv_args)
        x = conv_input(case, 0)
        k = case.fan_in if case.k is None else case.k
        ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, k)
        assert bool(((layer(x).double() - ref).abs() <= bound).all()), case.name
        print("ok", case.name)
    """
)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("triton") is None, reason="triton not installed"
)
def test_triton_conv_path_matches_reference_under_the_interpreter_on_cpu():
    proc = run_under_triton_interpreter(INTERPRETED, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == 8, proc.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fused", "fused_triton", "dense", "naive"])
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_conv_backends_on_cuda(name, case):
    weight, mask, bias = conv_layer(case, 0)
    layer = backends.create(name, weight.cuda(), mask.cuda(), bias.cuda(), **case.conv_args)
    x = conv_input(case, 0)
    y = layer(x.cuda()).cpu()
    k = case.fan_in if case.k is None else case.k
    ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, k)
    assert bool(((y.double() - ref).abs() <= bound).all())


# --------------------------------------------------------------------------- direct kernel


def _fused_or_skip():
    ok, why = backends.supports("fused", "cpu", torch.float32, op="conv2d")
    if not ok:
        pytest.skip(why)
    from backends.fused_conv import conv_ops

    return conv_ops()


@pytest.mark.parametrize("case", [CONV_CASES[i] for i in (0, 1, 3, 5, 7, 12, 13)], ids=str)
def test_every_direct_kernel_variant_and_isa_matches_reference(case, monkeypatch):
    import backends.fused_conv as fc

    ops = _fused_or_skip()
    weight, mask, bias = conv_layer(case, 7)
    x = conv_input(case, 7)
    k = case.fan_in if case.k is None else case.k
    ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, k)
    for isa in range(int(ops.conv_isa()) + 1):
        for v in range(int(ops.conv_nvariants(isa))):
            code = isa * 100 + v
            monkeypatch.setattr(fc, "best_variant", lambda *a, code=code, **kw: code)
            layer = backends.create("fused", weight, mask, bias, **case.conv_args)
            y = layer(x)
            assert bool(((y.double() - ref).abs() <= bound).all()), (case.name, code)


def test_direct_kernel_rejects_a_variant_this_cpu_lacks_or_unknown():
    ops = _fused_or_skip()
    case = CONV_CASES[0]
    layer = backends.create("fused", *conv_layer(case, 0), **case.conv_args)
    x = conv_input(case, 0)
    layer(x)
    offs = next(iter(layer._plans.values()))[0][5]  # (geometry, variant); geometry[5] = offs
    args = (x, x.shape[0], x[0].numel(), offs, layer.values, layer.active, layer.bias, False)
    with pytest.raises(RuntimeError, match="no variant"):
        ops.conv_direct(*args, 7, 13, 13, False, 99)
    if int(ops.conv_isa()) < 2:
        with pytest.raises(RuntimeError, match="ISA this CPU lacks"):
            ops.conv_direct(*args, 7, 13, 13, False, 200)


def test_fused_conv_keeps_a_bounded_number_of_plans(monkeypatch):
    """Many input sizes (a detection model, variable crops) keep at most MAX_PLANS plans, and a
    size whose plan was dropped is planned again and still computes the convolution."""
    import backends.fused_conv as fused_conv

    _fused_or_skip()
    monkeypatch.setenv("SRIGL_TUNE", "off")
    monkeypatch.setattr(fused_conv, "MAX_PLANS", 4)
    case = CONV_CASES[0]
    weight, mask, bias = conv_layer(case, 0)
    layer = backends.create("fused", weight, mask, bias, **case.conv_args)
    first = None
    for size in range(9, 17):
        x = torch.randn(1, weight.shape[1] * case.conv_args.get("groups", 1), size, size + 1)
        first = x if first is None else first
        layer(x)
        assert len(layer._plans) == min(size - 8, 4)
        assert (x.shape, torch.get_num_threads()) in layer._plans  # the newest plan is kept
    assert (first.shape, torch.get_num_threads()) not in layer._plans
    # another batch of a planned size reuses that plan's geometry (tap offsets included)
    threads = torch.get_num_threads()
    layer(torch.cat([x, x, x]))
    assert layer._plans[(x.shape, threads)][0] is layer._plans[((3, *x.shape[1:]), threads)][0]
    ref = F.conv2d(first.double(), (weight * mask).double(), bias.double(), **case.conv_args)
    assert torch.allclose(layer(first).double(), ref, atol=1e-4, rtol=1e-4)


def test_conv_tuner_caches_its_choice_per_machine(tmp_path, monkeypatch):
    import backends.kernels.conv_tuner as tuner

    _fused_or_skip()
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    tuner.forget_memory()
    case = CONV_CASES[2]
    layer = backends.create("fused", *conv_layer(case, 0), **case.conv_args)
    layer(conv_input(case, 0))
    files = list((tmp_path / "tuner").glob("conv-*.json"))
    assert len(files) == 1
    entries = json.loads(files[0].read_text())["entries"]
    assert len(entries) == 1 and next(iter(entries.values())) != -1
    # a second module with the same shapes reads the choice instead of timing again
    calls = []
    monkeypatch.setattr(
        tuner, "fastest_interleaved", lambda fns, *a: calls.append(1) or dict.fromkeys(fns, 1.0)
    )
    tuner.forget_memory()
    backends.create("fused", *conv_layer(case, 1), **case.conv_args)(conv_input(case, 0))
    assert calls == []
    # an unreadable cache is ignored with a warning (and rewritten), never an error
    from backends.kernels.tune_cache import TuneCacheWarning

    files[0].write_text("{not json")
    tuner.forget_memory()
    with pytest.warns(TuneCacheWarning, match="ignoring the conv-kernel tuning cache"):
        backends.create("fused", *conv_layer(case, 2), **case.conv_args)(conv_input(case, 0))
    assert json.loads(files[0].read_text())["schema"] == tuner.SCHEMA
    monkeypatch.setenv("SRIGL_TUNE", "off")
    assert tuner.best_variant("k", 1, 6, lambda code: None, 1) == -1
    tuner.forget_memory()


def test_dense_fallback_is_a_tuner_candidate_and_computes_the_same(monkeypatch):
    import backends.fused_conv as fc

    ops = _fused_or_skip()
    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: fc.DENSE_VARIANT)
    for case in (CONV_CASES[10], CONV_CASES[1], CONV_CASES[5]):  # k = fan-in, 1x1 s2, groups
        weight, mask, bias = conv_layer(case, 5)
        x = conv_input(case, 5)
        layer = backends.create("fused", weight, mask, bias, **case.conv_args)
        k = case.fan_in if case.k is None else case.k
        ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, k)
        y = layer(x)
        assert y.shape == ref.shape and bool(((y.double() - ref).abs() <= bound).all())
        assert set(layer.chosen_variants().values()) == {"dense"}
    case = CONV_CASES[10]
    weight, mask, bias = conv_layer(case, 5)
    x = conv_input(case, 5)
    seen = {}
    code = int(ops.conv_isa()) * 100
    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: seen.update(kw) or code)
    monkeypatch.setenv("SRIGL_CONV_DENSE_FALLBACK", "off")
    layer = backends.create("fused", weight, mask, bias, **case.conv_args)
    layer(x)
    assert seen["extra"] == () and layer._dense is None


@pytest.mark.parametrize("batch", [0, 1, 3])
def test_a_1x1_conv_as_the_fused_linear_is_a_tuner_candidate_and_computes_the_same(
    monkeypatch, batch
):
    """1x1 convs (odd H x W with ablated output channels; stride 2) run as the fused linear
    over the pixels when the tuner picks it (LINEAR_VARIANT): F.conv2d's results on the masked
    weight, for one image and several; SRIGL_CONV_LINEAR=off leaves it out of the candidates,
    and convs that are not 1x1 never offer it."""
    import backends.fused_conv as fc

    _fused_or_skip()
    from backends.kernels import ops as linear_ops

    if not linear_ops.available()[0]:
        pytest.skip("the fused linear extension is unavailable")
    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: fc.LINEAR_VARIANT)
    for case in (CONV_CASES[0], CONV_CASES[1]):
        weight, mask, bias = conv_layer(case, 7)
        g = torch.Generator().manual_seed(batch)
        x = torch.randn(batch, case.cin, case.h, case.w, generator=g)
        layer = backends.create("fused", weight, mask, bias, **case.conv_args)
        ref, bound = conv_error_bound(x, weight, mask, bias, case.conv_args, case.k)
        y = layer(x)
        assert y.shape == ref.shape and y.is_contiguous()
        assert bool(((y.double() - ref).abs() <= bound).all()), case.name
        if batch:  # (an empty batch returns before any plan is made)
            assert set(layer.chosen_variants().values()) == {"linear"}
            assert layer(x).data_ptr() != y.data_ptr()  # a fresh output per call
    seen = {}
    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: seen.update(kw) or -1)
    case = CONV_CASES[0]
    layer = backends.create("fused", *conv_layer(case, 7), **case.conv_args)
    layer(conv_input(case, 7))
    assert fc.LINEAR_VARIANT in seen["extra"]
    monkeypatch.setenv("SRIGL_CONV_LINEAR", "off")
    layer = backends.create("fused", *conv_layer(case, 7), **case.conv_args)
    layer(conv_input(case, 7))
    assert fc.LINEAR_VARIANT not in seen["extra"] and layer._linear is None
    monkeypatch.delenv("SRIGL_CONV_LINEAR")
    case = CONV_CASES[2]  # 3x3, padding 1
    layer = backends.create("fused", *conv_layer(case, 7), **case.conv_args)
    layer(conv_input(case, 7))
    assert fc.LINEAR_VARIANT not in seen["extra"]


@pytest.mark.slow
def test_fused_conv_runs_under_torch_compile_and_inference_mode():
    _fused_or_skip()
    case = CONV_CASES[3]
    weight, mask, bias = conv_layer(case, 6)
    layer = backends.create("fused", weight, mask, bias, **case.conv_args)
    x = conv_input(case, 6)
    with torch.inference_mode():
        want = layer(x)  # tunes eagerly
        got = torch.compile(layer)(x)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("name", [n for n in backends.names() if n != "compiled"])
def test_a_whole_conv_module_pickles_and_computes_the_same_after(name):
    """torch.save of a condensed model pickles its modules: each backend's conv class must be
    importable by name (a class made with type() at run time is not)."""
    _skip_unless(name)
    case = CONV_CASES[2]
    weight, mask, bias = conv_layer(case, 3)
    layer = backends.create(name, weight, mask, bias, layer_name=case.name, **case.conv_args)
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    again = torch.load(buf, weights_only=False)  # our own object, written just above
    x = conv_input(case, 1)
    with torch.no_grad():
        assert type(again) is type(layer) and torch.equal(again(x), layer(x))


@pytest.mark.parametrize("name", ["naive", "fused"])
@pytest.mark.parametrize(
    "change",
    [
        {"kernel_size": [1, 1]},  # fan-in 27 kept: the kernel would read past the input planes
        {"in_channels": 9},
        {"groups": 2},
        {"stride": [0, 1]},
        {"kernel_size": "3"},
    ],
    ids=str,
)
def test_load_state_dict_refuses_a_geometry_inconsistent_with_the_buffers(name, change):
    """Both load paths check the conv geometry of the extra state, not only from_state_dict."""
    from backends.state_checks import LayerStateError

    _skip_unless(name)
    case = CONV_CASES[2]
    weight, mask, bias = conv_layer(case, 0)
    layer = backends.create(name, weight, mask, bias, layer_name="c", **case.conv_args)
    state = layer.state_dict()
    state["_extra_state"] = {**state["_extra_state"], **change}
    with pytest.raises(LayerStateError, match="geometry|kernel_size|stride|in_features"):
        layer.load_state_dict(state)
    with pytest.raises(LayerStateError):
        type(layer).from_state_dict(state)
    x = conv_input(case, 0)
    assert layer(x).shape[1] == case.cout  # the refused load left the layer as it was


def test_fused_conv_is_unavailable_when_its_build_fails_not_only_without_a_compiler(monkeypatch):
    """available() loads the extension: a failing build says so (it said True while a
    compiler existed, and the failure surfaced at the first forward)."""
    from backends import fused_conv
    from backends.kernels import build

    def failing_build(name, sources, extra_cflags=None):
        raise build.KernelUnavailableError("build failed: simulated error")

    monkeypatch.setattr(build, "load_extension", failing_build)
    real = fused_conv._EXT
    fresh = build.Extension(real.name, real.sources, real.namespace, label=real.label)
    monkeypatch.setattr(fused_conv, "_EXT", fresh)
    ok, why = fused_conv.FusedConv2d.available("cpu")
    assert not ok and "direct conv kernel is unavailable: build failed: simulated" in why


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: c.name)
def test_every_variant_applies_the_relu_and_residual_epilogue(case, monkeypatch):
    """relu(conv(x) + residual) from every direct variant, the dense fallback and the linear
    candidate, with ablated channels (which hold relu(bias + residual)), NaN kept by the ReLU;
    a residual that broadcasts or is not contiguous takes the Python epilogue."""
    import backends.fused_conv as fc

    ops = _fused_or_skip()
    weight, mask, bias = conv_layer(case, 11)
    x = conv_input(case, 11)
    ref = F.conv2d(x.double(), weight.double() * mask, bias.double(), **case.conv_args)
    residual = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3))
    if residual.numel():
        residual.view(-1)[0] = float("nan")
    want = torch.relu(ref + residual.double())
    codes = [fc.DENSE_VARIANT, fc.LINEAR_VARIANT] + [
        isa * 100 + v
        for isa in range(int(ops.conv_isa()) + 1)
        for v in range(int(ops.conv_nvariants(isa)))
    ]
    k = case.fan_in if case.k is None else case.k
    top = ref.abs().max().item() if ref.numel() else 0.0
    tol = 4 * (k + 2) * torch.finfo(torch.float32).eps * (top + 10)
    for code in codes:
        monkeypatch.setattr(fc, "best_variant", lambda *a, code=code, **kw: code)
        layer = backends.create("fused", weight, mask, bias, **case.conv_args)
        if code == fc.LINEAR_VARIANT and not layer._linear_offered():
            continue
        layer.epilogue_relu = True
        for res in (residual, residual.transpose(2, 3).contiguous().transpose(2, 3)):
            y = layer(x, residual=res)
            assert y.shape == want.shape, code
            torch.testing.assert_close(y.double(), want, rtol=0, atol=tol, equal_nan=True)
        if ref.numel():
            per_channel = residual[:1, :, :1, :1]  # broadcasts over the output
            y = layer(x, residual=per_channel)
            want_b = torch.relu(ref + per_channel.double())
            torch.testing.assert_close(y.double(), want_b, rtol=0, atol=tol, equal_nan=True)


def test_a_residual_of_the_wrong_shape_is_refused_by_the_operator():
    ops = _fused_or_skip()
    case = CONV_CASES[0]
    layer = backends.create("fused", *conv_layer(case, 0), **case.conv_args)
    x = conv_input(case, 0)
    y = layer(x)
    offs = next(iter(layer._plans.values()))[0][5]
    args = (x, x.shape[0], x[0].numel(), offs, layer.values, layer.active, layer.bias, False)
    with pytest.raises(RuntimeError, match="residual must be"):
        ops.conv_direct(*args, 7, 13, 13, False, -1, y[:, :1], True)


def test_the_linear_candidate_of_a_1x1_conv_stays_out_of_the_state_dict(monkeypatch):
    """The fused linear a 1x1 conv runs through is derived: running it adds no state."""
    import backends.fused_conv as fc

    _fused_or_skip()
    case = CONV_CASES[0]
    monkeypatch.setattr(fc, "best_variant", lambda *a, **kw: fc.LINEAR_VARIANT)
    layer = backends.create("fused", *conv_layer(case, 0), **case.conv_args)
    keys = set(layer.state_dict())
    layer(conv_input(case, 0))
    if layer._linear is None:
        pytest.skip("the fused linear layer cannot run here")
    assert set(layer.state_dict()) == keys


@pytest.mark.parametrize("hq,wq", [(1, 1), (7, 9), (16, 16), (58, 58), (48, 48), (115, 115)])
def test_padded_planes_start_cache_lines_an_odd_number_of_lines_apart(hq, wq):
    from backends.fused_conv import plane_stride

    stride = plane_stride(hq, wq)
    assert stride >= hq * wq and stride % 16 == 0 and (stride // 16) % 2 == 1
    assert stride - hq * wq < 32  # at most one line and a partial one added


def test_conv_planes_zero_the_gap_between_planes_and_refuse_a_short_stride():
    ops = _fused_or_skip()
    x = torch.randn(2, 3, 5, 4)
    buf = ops.conv_planes(x, 1, 1, 1, 1, 7, 6, 48)  # 42 floats a plane, 48 apart
    planes = buf[: 2 * 3 * 48].view(6, 48)
    torch.testing.assert_close(planes[:, :42].view(2, 3, 7, 6), F.pad(x, (1, 1, 1, 1)))
    assert bool((planes[:, 42:] == 0).all())
    with pytest.raises(RuntimeError, match="plane_stride"):
        ops.conv_planes(x, 1, 1, 1, 1, 7, 6, 41)


@pytest.mark.parametrize("name", backends.names())
def test_a_1x1_output_at_batch_1_with_ablated_channels_leaves_the_bias_alone(name):
    """With one image and a 1 x 1 output, a bias expanded to the output's shape is already
    contiguous: an output made from it with .contiguous() was the layer's bias itself, and
    writing the active channels into it changed the bias (the next call then came out wrong)."""
    _skip_unless(name)
    g = torch.Generator().manual_seed(4)
    weight = torch.randn(12, 6, 3, 3, generator=g)
    mask = torch.rand(12, 54, generator=g).argsort(1) < 9
    mask[[2, 7]] = False  # ablated channels: their output is the bias
    bias = torch.randn(12, generator=g)
    layer = backends.create(name, weight, mask.reshape(weight.shape), bias)
    before = layer.state_dict()["bias"].clone()
    x = torch.randn(1, 6, 3, 3, generator=g)
    ref = F.conv2d(x, weight * mask.reshape(weight.shape), bias)
    with torch.no_grad():
        first, second = layer(x), layer(x)
    torch.testing.assert_close(layer.state_dict()["bias"], before, rtol=0, atol=0)
    torch.testing.assert_close(first, ref, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(second, ref, rtol=1e-4, atol=1e-4)
    assert first.data_ptr() != layer.state_dict()["bias"].data_ptr()
