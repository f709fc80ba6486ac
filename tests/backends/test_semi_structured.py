"""``semi_structured``: 2:4 layers on CUDA sparse tensor cores. Here (CPU): availability says why
not, and a mask that is not 2:4 is refused in one line naming the layer and the neuron; the
GPU test (marked ``gpu``) checks the layer against the masked dense one."""

from __future__ import annotations

import pytest
import torch

import backends
from backends.nm import nm_mask
from backends.semi_structured import NotTwoFourError, SemiStructuredLinear, check_two_four


def test_unavailable_on_cpu_and_without_cuda_saying_why():
    ok, why = backends.available("semi_structured", "cpu")
    assert not ok and "CUDA" in why and "cpu" in why
    if not torch.cuda.is_available():
        ok, why = backends.available("semi_structured", "cuda")
        assert not ok and why.startswith("CUDA is not available")
    ok, why = backends.get("semi_structured").supports("cpu", torch.float16)
    assert not ok and why
    with pytest.raises(backends.BackendUnavailableError, match="not on cpu"):
        backends.create("semi_structured", torch.randn(8, 8), nm_mask((8, 8), 2, 4))


def test_declares_float16_and_bfloat16_on_cuda_only():
    assert SemiStructuredLinear.devices == ("cuda",)
    assert set(SemiStructuredLinear.dtypes) == {torch.float16, torch.bfloat16}


@pytest.mark.parametrize(
    "mask,match",
    [
        (nm_mask((6, 16), 1, 4), "neuron 0 keeps 1 of inputs 0..3"),
        (nm_mask((6, 16), 4, 8), r"neuron \d keeps [0-4] of inputs"),
        (torch.ones(6, 10, dtype=torch.bool), r"in a multiple of 4, got shape \[6, 10\]"),
    ],
    ids=["1of4", "4of8", "in_10"],
)
def test_a_mask_that_is_not_two_four_is_a_one_line_error_naming_the_layer(mask, match):
    weight = torch.randn(*mask.shape)
    with pytest.raises(NotTwoFourError, match=match) as err:
        SemiStructuredLinear(weight, mask, None, layer_name="fc1")  # checked before the device
    assert "'fc1'" in str(err.value) and "\n" not in str(err.value)
    assert isinstance(err.value, ValueError)


def test_two_four_masks_with_ablated_neurons_pass_the_check():
    mask = nm_mask((6, 16), 2, 4, generator=torch.Generator().manual_seed(0))
    mask[3] = False
    check_two_four(mask, "fc1")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", [(64, 128), (96, 200), (23, 36)], ids=str)
def test_semi_structured_matches_masked_dense_linear_on_cuda(shape, dtype):
    ok, why = backends.available("semi_structured", "cuda")
    if not ok:
        pytest.skip(why)
    g = torch.Generator().manual_seed(0)
    out_f, in_f = shape
    weight = torch.randn(out_f, in_f, generator=g)
    bias = torch.randn(out_f, generator=g)
    mask = nm_mask(shape, 2, 4, generator=g)
    mask[1] = False
    layer = backends.create(
        "semi_structured", weight.cuda().to(dtype), mask.cuda(), bias.cuda().to(dtype)
    )
    for batch in (1, 7, 64):
        x = torch.randn(batch, in_f, generator=g)
        y = layer(x.cuda().to(dtype))
        ref = torch.nn.functional.linear(x.double(), weight.double() * mask, bias.double())
        mag = torch.nn.functional.linear(x.abs().double(), weight.abs().double() * mask)
        bound = 2 * (in_f // 2 + 1) * torch.finfo(dtype).eps * (mag + bias.abs().double())
        assert y.shape == (batch, out_f) and y.dtype == dtype
        assert bool(((y.double().cpu() - ref).abs() <= bound).all())
