"""Every registered backend computes F.linear(x, weight * mask, bias) within a rounding bound."""

from __future__ import annotations

import pytest
import torch
from backend_cases import (
    CASES,
    DTYPES,
    constant_fan_in_layer,
    cpu_layer,
    error_bound,
    skip_unless_supported,
)

import backends


def _params():
    for name in backends.names():
        slow = getattr(backends.get(name), "slow_to_build", False)
        for case in CASES:
            for dtype in DTYPES:
                for seed in (0, 1):
                    # compile-heavy backends: one quick case, the rest marked slow
                    quick = seed == 0 and case is CASES[0] and dtype == torch.float32
                    marks = [pytest.mark.slow] if slow and not quick else []
                    yield pytest.param(
                        name,
                        case,
                        dtype,
                        seed,
                        marks=marks,
                        id=f"{name}-{case.name}-{str(dtype).split('.')[-1]}-seed{seed}",
                    )


@pytest.mark.parametrize("name,case,dtype,seed", list(_params()))
def test_backend_matches_masked_dense_linear_within_rounding_bound(name, case, dtype, seed):
    skip_unless_supported(name, "cpu", dtype)
    weight, mask, bias = constant_fan_in_layer(case, seed, dtype)
    layer = backends.create(name, weight, mask, bias, layer_name=case.name)
    g = torch.Generator().manual_seed(100 + seed)
    x = torch.randn(*case.lead, case.in_features, generator=g).to(dtype)
    with torch.no_grad():
        y = layer(x)
    ref, bound = error_bound(x, weight, mask, bias, case.k + (case.extra > 0))
    assert y.shape == (*case.lead, case.out_features)
    assert y.dtype == dtype
    err = (y.double() - ref).abs()
    worst = (err - bound).max()
    assert worst <= 0, f"error exceeds bound by {worst.item():.3g} (max err {err.max().item()})"


GRAD_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("mode", sorted(GRAD_MODES))
@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("name", backends.names())
def test_backend_runs_under_no_grad_and_inference_mode(name, batch, mode):
    """Serving code runs under inference_mode; the result equals the no_grad one bit for bit."""
    case = CASES[0]
    layer, weight, mask, bias = cpu_layer(name, 5, layer_name=case.name)
    x = torch.randn(batch, case.in_features)
    with GRAD_MODES[mode]():
        y = layer(x)
        y3 = layer(x.reshape(batch, 1, -1))  # leading dims too
    with torch.no_grad():
        ref = layer(x)
    assert torch.equal(y, ref) and torch.equal(y3.reshape(batch, -1), ref)
    torch.testing.assert_close(y, x @ (weight * mask).T + bias, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", backends.names())
def test_ablated_neurons_output_their_bias_alone(name):
    case = CASES[0]
    layer, weight, mask, bias = cpu_layer(name, 3)
    x = torch.randn(4, case.in_features)
    with torch.no_grad():
        y = layer(x)
    ablated = ~mask.any(dim=1)
    assert ablated.sum() == case.out_features - case.n_active
    assert torch.equal(y[:, ablated], bias[ablated].expand(4, -1))


@pytest.mark.parametrize("name", backends.names())
def test_layer_without_bias_and_empty_batch(name):
    case = CASES[0]
    layer, weight, mask, _ = cpu_layer(name, 4, with_bias=False)
    x = torch.randn(3, case.in_features)
    with torch.no_grad():
        y = layer(x)
        empty = layer(torch.randn(0, case.in_features))
    torch.testing.assert_close(y, x @ (weight * mask).T)
    assert empty.shape == (0, case.out_features)


@pytest.mark.parametrize("name", backends.names())
def test_every_backend_declares_devices_dtypes_and_explains_unavailability(name):
    cls = backends.get(name)
    assert cls.devices and all(d in ("cpu", "cuda") for d in cls.devices)
    assert cls.dtypes and all(d.is_floating_point for d in cls.dtypes)
    for device in ("cpu", "cuda"):
        ok, why = backends.available(name, device)
        assert isinstance(ok, bool) and (ok or why), f"{name} on {device}: no reason given"
