"""N:M masks (backends/nm.py) and N:M layers on every backend: a condensed N:M layer (Linear or
Conv2d, grouped and depthwise included) equals the masked dense layer within the rounding bound
the constant fan-in cross-check uses."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from backend_cases import error_bound, run_under_triton_interpreter, skip_unless_supported
from conv_cases import conv_error_bound

import backends
from backends.nm import detect_nm, is_nm, nm_mask

PATTERNS = [(2, 4), (1, 4), (1, 8), (4, 8)]


PATTERN_IDS = [f"{n}of{m}" for n, m in PATTERNS]


# ---------------------------------------------------------------- the mask helpers
@pytest.mark.parametrize("shape", [(12, 32), (5, 8, 3, 3), (4, 1, 4, 4)], ids=str)
@pytest.mark.parametrize("n,m", PATTERNS, ids=PATTERN_IDS)
def test_nm_mask_keeps_exactly_n_of_every_m_consecutive_fan_in_positions(shape, n, m):
    fan_in = torch.Size(shape[1:]).numel()
    if fan_in % m:
        pytest.skip(f"fan-in {fan_in} is not a multiple of {m}")
    mask = nm_mask(shape, n, m, generator=torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and mask.shape == shape
    groups = mask.reshape(shape[0], -1, m).sum(-1)
    assert bool((groups == n).all())
    assert bool((mask.reshape(shape[0], -1).sum(1) == n * fan_in // m).all())  # constant fan-in
    assert is_nm(mask, n, m)


def test_nm_mask_is_random_but_reproducible_with_a_generator():
    a = nm_mask((8, 64), 2, 4, generator=torch.Generator().manual_seed(3))
    b = nm_mask((8, 64), 2, 4, generator=torch.Generator().manual_seed(3))
    c = nm_mask((8, 64), 2, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "shape,n,m,match",
    [
        ((4, 10), 2, 4, "fan-in 10 is not a multiple of M = 4"),
        ((4, 8), 4, 4, "1 <= N < M, got 4:4"),
        ((4, 8), 0, 4, "1 <= N < M, got 0:4"),
        ((8,), 1, 2, r"shape must be \[out, in\]"),
    ],
)
def test_nm_mask_rejects_bad_patterns_and_shapes_naming_them(shape, n, m, match):
    with pytest.raises(ValueError, match=match):
        nm_mask(shape, n, m)


def test_is_nm_and_detect_nm_find_the_finest_pattern_and_allow_ablated_rows():
    mask = nm_mask((6, 16), 2, 4, generator=torch.Generator().manual_seed(1))
    assert detect_nm(mask) == (2, 4)
    assert is_nm(mask, 4, 8)  # 2:4 is also 4:8
    assert not is_nm(mask, 1, 4) and not is_nm(mask, 2, 3)  # 16 % 3: not N:M
    mask[2] = False  # an ablated neuron
    assert is_nm(mask, 2, 4) and detect_nm(mask) == (2, 4)
    assert not is_nm(mask, 2, 4, allow_ablated=False)
    assert detect_nm(mask, allow_ablated=False) is None
    half = torch.zeros(4, 8, dtype=torch.bool)
    half[:, ::2] = True  # every pair keeps its first: 1:2
    assert detect_nm(half) == (1, 2)
    assert detect_nm(torch.zeros(3, 8, dtype=torch.bool)) is None
    assert detect_nm(torch.rand(5, 24, generator=torch.Generator().manual_seed(0)) > 0.5) is None


def test_conv_groups_run_along_the_flattened_fan_in_c_dy_dx():
    mask = nm_mask((3, 2, 3, 3), 1, 2, generator=torch.Generator().manual_seed(0))
    flat = mask.reshape(3, 18)
    assert bool((flat.reshape(3, 9, 2).sum(-1) == 1).all())
    assert detect_nm(mask) == (1, 2)


# ---------------------------------------------------------------- N:M layers on every backend
def _linear(n: int, m: int, seed: int, dtype: torch.dtype, out_f: int = 24, in_f: int = 64):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_f, in_f, generator=g).to(dtype)
    bias = torch.randn(out_f, generator=g).to(dtype)
    mask = nm_mask((out_f, in_f), n, m, generator=g)
    mask[torch.randperm(out_f, generator=g)[:3]] = False  # ablated neurons
    return weight, mask, bias


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("n,m", PATTERNS, ids=PATTERN_IDS)
@pytest.mark.parametrize("name", backends.names())
def test_nm_linear_layer_equals_masked_dense_on_every_backend(name, n, m, dtype):
    skip_unless_supported(name, "cpu", dtype)
    if getattr(backends.get(name), "slow_to_build", False) and (n, m, dtype) != (
        2,
        4,
        torch.float32,
    ):
        pytest.skip(f"{name} compiles per layer: one N:M case is enough")
    weight, mask, bias = _linear(n, m, 0, dtype)
    layer = backends.create(name, weight, mask, bias, layer_name=f"nm{n}of{m}")
    for batch in (1, 7, 70):
        x = torch.randn(batch, 64, generator=torch.Generator().manual_seed(batch)).to(dtype)
        with torch.no_grad():
            y = layer(x)
        ref, bound = error_bound(x, weight, mask, bias, n * 64 // m)
        err = (y.double() - ref).abs()
        assert bool((err <= bound).all()), f"batch {batch}: max error {err.max().item():.3g}"


CONV_GEOMETRIES = {
    "k3_pad1": dict(cin=8, cout=12, kernel=3, groups=1, padding=1),  # fan-in 72
    "k1x1": dict(cin=16, cout=10, kernel=1, groups=1, padding=0),  # fan-in 16
    "k3_groups2": dict(cin=16, cout=8, kernel=3, groups=2, padding=1),  # fan-in 72
    "depthwise_k4": dict(cin=6, cout=6, kernel=4, groups=6, padding=1),  # fan-in 16
}


@pytest.mark.parametrize("n,m", PATTERNS, ids=PATTERN_IDS)
@pytest.mark.parametrize("geometry", sorted(CONV_GEOMETRIES))
@pytest.mark.parametrize("name", backends.names())
def test_nm_conv_layer_equals_masked_dense_on_every_backend(name, geometry, n, m):
    ok, why = backends.supports(name, "cpu", torch.float32, op="conv2d")
    if not ok:
        pytest.skip(f"{name} conv on cpu: {why}")
    if getattr(backends.get(name), "slow_to_build", False) and (n, m) != (2, 4):
        pytest.skip(f"{name} compiles per layer: one N:M case is enough")
    geo = CONV_GEOMETRIES[geometry]
    shape = (geo["cout"], geo["cin"] // geo["groups"], geo["kernel"], geo["kernel"])
    fan_in = shape[1] * shape[2] * shape[3]
    if fan_in % m:
        pytest.skip(f"fan-in {fan_in} is not a multiple of {m}")
    g = torch.Generator().manual_seed(n * 10 + m)
    weight, bias = torch.randn(shape, generator=g), torch.randn(shape[0], generator=g)
    mask = nm_mask(shape, n, m, generator=g)
    mask[1] = False  # an ablated output channel
    args = {"padding": geo["padding"], "groups": geo["groups"]}
    layer = backends.create(name, weight, mask, bias, layer_name=geometry, **args)
    x = torch.randn(2, geo["cin"], 7, 9, generator=g)
    with torch.no_grad():
        y = layer(x)
    ref, bound = conv_error_bound(x, weight, mask, bias, args, n * fan_in // m)
    err = (y.double() - ref).abs()
    assert y.shape == ref.shape
    assert bool((err <= bound).all()), f"max error {err.max().item():.3g}"


INTERPRETED = """
import sys, torch
sys.path.insert(0, {tests!r})
import backends
from backend_cases import error_bound
from test_nm import PATTERNS, _linear
for n, m in PATTERNS:
    weight, mask, bias = _linear(n, m, 0, torch.float32)
    layer = backends.create("fused_triton", weight, mask, bias)
    x = torch.randn(5, 64)
    ref, bound = error_bound(x, weight, mask, bias, n * 64 // m)
    err = (layer(x).double() - ref).abs()
    assert bool((err <= bound).all()), (n, m, err.max().item())
    print("ok", n, m)
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton not installed")
def test_nm_linear_layer_on_the_triton_kernel_under_the_interpreter():
    proc = run_under_triton_interpreter(INTERPRETED, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("ok ") == len(PATTERNS), proc.stdout


@pytest.mark.gpu
@pytest.mark.parametrize("n,m", PATTERNS, ids=PATTERN_IDS)
@pytest.mark.parametrize("name", ["fused", "fused_triton", "naive", "csr", "semi_structured"])
def test_nm_linear_layer_equals_masked_dense_on_cuda(name, n, m):
    ok, why = backends.supports(name, "cuda", torch.float16)
    if not ok:
        pytest.skip(why)
    if name == "semi_structured" and (n, m) != (2, 4):
        pytest.skip("semi_structured takes 2:4 masks only")
    weight, mask, bias = _linear(n, m, 0, torch.float16)
    layer = backends.create(name, weight.cuda(), mask.cuda(), bias.cuda())
    x = torch.randn(7, 64).half()
    ref, bound = error_bound(x, weight, mask, bias, n * 64 // m)
    err = (layer(x.cuda()).cpu().double() - ref).abs()
    assert bool((err <= bound).all()), f"max error {err.max().item():.3g}"
