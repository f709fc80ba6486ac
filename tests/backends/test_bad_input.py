"""Bad inputs give specific errors naming what was expected and what came."""

from __future__ import annotations

import pytest
import torch
from backend_cases import CASES, constant_fan_in_layer, skip_unless_supported

import backends
from backends.base import BadInputError


def _layer(name):
    skip_unless_supported(name, "cpu", torch.float32)
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    return backends.create(name, weight, mask, bias, layer_name="fc")


@pytest.mark.parametrize("name", backends.names())
def test_wrong_input_width_names_expected_and_got(name):
    layer = _layer(name)
    with pytest.raises(BadInputError, match=r"'fc'.*\[\.\.\., 37\].*\[4, 36\]"):
        layer(torch.randn(4, 36))
    with pytest.raises(ValueError):
        layer(torch.randn(()))


@pytest.mark.parametrize("name", backends.names())
def test_an_input_that_is_not_a_tensor_names_what_came(name):
    layer = _layer(name)
    with pytest.raises(BadInputError, match=r"'fc'.*expected a tensor, got <class 'list'>"):
        layer([0.0] * 37)


@pytest.mark.parametrize("name", backends.names())
def test_wrong_input_dtype_names_expected_and_got(name):
    layer = _layer(name)
    with pytest.raises(TypeError, match=r"expected input dtype torch\.float32, got torch\.float64"):
        layer(torch.randn(4, 37, dtype=torch.float64))


@pytest.mark.parametrize("name", backends.names())
def test_wrong_input_device_names_expected_and_got(name):
    layer = _layer(name)
    with pytest.raises(BadInputError, match=r"expected input on cpu, got meta"):
        layer(torch.empty(4, 37, device="meta"))


def test_unknown_backend_lists_the_known_ones():
    with pytest.raises(backends.UnknownNameError, match=r"unknown backend 'fast'.*dense.*naive"):
        backends.create("fast", torch.randn(2, 2), torch.ones(2, 2, dtype=torch.bool))


@pytest.mark.parametrize(
    "weight,mask,bias,match",
    [
        (
            torch.randn(3),
            torch.ones(3, dtype=torch.bool),
            None,
            r"2-d tensor \[out, in\], got \[3\]",
        ),
        (torch.randn(3, 4), torch.ones(4, 3, dtype=torch.bool), None, r"weight's shape \[3, 4\]"),
        (torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool), torch.randn(4), r"\[out\]=\[3\]"),
        (torch.ones(3, 4, dtype=torch.int64), torch.ones(3, 4), None, r"floating point"),
    ],
)
def test_malformed_layers_are_rejected(weight, mask, bias, match):
    for name in ("dense", "naive"):
        with pytest.raises(BadInputError, match=match):
            backends.create(name, weight, mask, bias)


def test_unsupported_weight_dtype_names_the_supported_ones():
    w = torch.randn(3, 4, dtype=torch.bfloat16)
    with pytest.raises(BadInputError, match=r"supports dtypes \(torch\.float32,\)"):
        backends.create("csr", w, torch.ones(3, 4, dtype=torch.bool))


def test_creating_an_unavailable_backend_says_why():
    ok, why = backends.available("fused_triton", "cpu")
    if ok:
        pytest.skip("Triton runs here (CUDA or TRITON_INTERPRET=1)")
    with pytest.raises(backends.BackendUnavailableError, match="TRITON_INTERPRET"):
        backends.create("fused_triton", torch.randn(3, 4), torch.ones(3, 4, dtype=torch.bool))


@pytest.mark.parametrize("name", ["dense", "structured", "naive", "csr"])
@pytest.mark.parametrize("value", [0.5, -1.0, float("nan"), 2.0])
def test_non_boolean_mask_values_are_refused_not_read_as_true(name, value):
    mask = torch.ones(3, 4)
    mask[1, 2] = value
    with pytest.raises(BadInputError, match=r"mask must be bool \(or hold only 0 and 1\)"):
        backends.create(name, torch.randn(3, 4), mask)
    ok = backends.create(name, torch.randn(3, 4), torch.ones(3, 4))  # 0/1 of any dtype is fine
    assert ok(torch.randn(2, 4)).shape == (2, 3)
