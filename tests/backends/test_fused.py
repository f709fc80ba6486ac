"""The numba CPU kernels of the ``fused`` backend: index width, kernel choice, transposed path."""

from __future__ import annotations

import pytest
import torch
from backend_cases import CASES, Case, constant_fan_in_layer, error_bound

import backends
from backends.fused_cpu import ROWS_KERNEL_MAX_BATCH

pytestmark = pytest.mark.skipif(
    not backends.available("fused", "cpu")[0], reason=backends.available("fused", "cpu")[1]
)


@pytest.mark.parametrize(
    "in_features,expected", [(37, torch.int16), (32767, torch.int16), (32768, torch.int32)]
)
def test_fused_keeps_int16_indices_below_32768_inputs_else_int32(in_features, expected):
    case = Case("width", in_features, 3, 2, 3, (1,))
    weight, mask, bias = constant_fan_in_layer(case, 0)
    layer = backends.create("fused", weight, mask, bias)
    assert layer.kernel_indices.dtype == expected
    x = torch.randn(2, in_features)
    torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, weight * mask, bias))


BATCHES = [1, 2, ROWS_KERNEL_MAX_BATCH, ROWS_KERNEL_MAX_BATCH + 1, 31, 32, 33, 100]


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("case", [CASES[0], CASES[7]], ids=lambda c: c.name)
def test_fused_row_and_tiled_kernels_agree_with_reference_around_their_switch(case, batch):
    weight, mask, bias = constant_fan_in_layer(case, batch)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    ref, bound = error_bound(x, weight, mask, bias, case.k)
    assert bool(((layer(x).double() - ref).abs() <= bound).all())


@pytest.mark.parametrize("batch", [1, 5, 32, 70])
@pytest.mark.parametrize("case", [CASES[0], CASES[3], CASES[7]], ids=lambda c: c.name)
def test_forward_transposed_takes_in_by_batch_and_returns_out_by_batch(case, batch):
    weight, mask, bias = constant_fan_in_layer(case, 11)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    yt = layer.forward_transposed(x.T.contiguous())
    assert yt.shape == (case.out_features, batch)
    ref, bound = error_bound(x, weight, mask, bias, case.k)
    assert bool(((yt.T.double() - ref).abs() <= bound).all())


def test_forward_transposed_rejects_untransposed_input():
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    layer = backends.create("fused", weight, mask, bias, layer_name="fc")
    with pytest.raises(ValueError, match=r"'fc'.*\[37, B\].*\[4, 37\]"):
        layer.forward_transposed(torch.randn(4, 37))


def test_numba_threads_follow_torch_threads():
    import numba

    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    layer = backends.create("fused", weight, mask, bias)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        layer(torch.randn(2, 37))
        assert numba.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    layer(torch.randn(2, 37))
    assert numba.get_num_threads() == min(before, numba.config.NUMBA_NUM_THREADS)


def test_fused_accepts_inputs_that_require_grad_for_inference():
    weight, mask, bias = constant_fan_in_layer(CASES[0], 0)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(3, 37, requires_grad=True)
    torch.testing.assert_close(
        layer(x), torch.nn.functional.linear(x, weight * mask, bias).detach()
    )


@pytest.mark.parametrize("serial_max_macs", [0, 2**40], ids=["parallel", "serial"])
@pytest.mark.parametrize("batch", [1, 3])
def test_serial_and_parallel_row_kernels_both_match_reference(monkeypatch, serial_max_macs, batch):
    from backends import fused_cpu

    monkeypatch.setattr(fused_cpu, "SERIAL_MAX_MACS", serial_max_macs)
    case = CASES[7]
    weight, mask, bias = constant_fan_in_layer(case, 21)
    layer = backends.create("fused", weight, mask, bias)
    x = torch.randn(batch, case.in_features)
    ref, bound = error_bound(x, weight, mask, bias, case.k)
    assert bool(((layer(x).double() - ref).abs() <= bound).all())
