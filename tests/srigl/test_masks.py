"""Which weights are sparse (names, wrappers, attention, convs) and the random initial masks."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from srigl.masks import (
    clean_name,
    eligible_parameters,
    forced_dense_names,
    random_fan_in_mask,
    random_n_m_mask,
    random_unstructured_mask,
    unwrap_model,
)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.dw = nn.Conv2d(8, 8, 3, groups=8)
        self.norm = nn.BatchNorm2d(8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.head = nn.Linear(8, 4)


def test_eligible_weights_are_linear_conv_and_attention_in_module_order():
    names = [p.name for p in eligible_parameters(Block())]
    assert names == [
        "conv.weight",
        "dw.weight",
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "head.weight",
    ]


def test_sparse_attention_false_keeps_attention_projections_dense():
    # they stay eligible (inside N, SPEC 1) and become forced-dense
    params = eligible_parameters(Block())
    dense = forced_dense_names(params, sparse_attention=False)
    assert dense == {"attn.in_proj_weight", "attn.out_proj.weight"}
    assert forced_dense_names(params) == set()


def test_an_attention_block_given_as_the_model_counts_its_out_proj_as_attention():
    attn = nn.MultiheadAttention(8, 2)
    params = eligible_parameters(attn)
    assert all(p.in_attention for p in params)
    assert forced_dense_names(params, sparse_attention=False) == {p.name for p in params}


def test_depthwise_conv_fan_in_is_kernel_size():
    params = {p.name: p for p in eligible_parameters(Block())}
    assert params["dw.weight"].fan_in == 9
    assert params["conv.weight"].fan_in == 27
    assert params["attn.in_proj_weight"].out_features == 24


def test_wrapper_prefixes_are_stripped_from_names():
    model = Block()
    plain = [p.name for p in eligible_parameters(model)]
    assert [p.name for p in eligible_parameters(nn.DataParallel(model))] == plain
    compiled = torch.compile(model)
    assert [p.name for p in eligible_parameters(compiled)] == plain
    assert unwrap_model(compiled) is model
    assert clean_name("encoder._orig_mod.fc.weight") == "encoder.fc.weight"


def test_forced_dense_takes_globs_first_layer_and_classifier():
    params = eligible_parameters(Block())
    assert forced_dense_names(params, dense_layers=["attn.*"]) == {
        "attn.in_proj_weight",
        "attn.out_proj.weight",
    }
    assert forced_dense_names(params, dense_first_layer=True, dense_classifier=True) == {
        "conv.weight",
        "head.weight",
    }
    assert forced_dense_names(params, dense_layers=["dw"]) == {"dw.weight"}


@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 40), fan_in=st.integers(1, 60), data=st.data())
def test_random_fan_in_mask_gives_each_active_row_exactly_k(out, fan_in, data):
    k = data.draw(st.integers(0, fan_in))
    seed = data.draw(st.integers(0, 2**31))
    active = torch.tensor(data.draw(st.lists(st.booleans(), min_size=out, max_size=out)))
    mask = random_fan_in_mask((out, fan_in), k, torch.Generator().manual_seed(seed), active)
    assert mask.dtype == torch.bool and mask.shape == (out, fan_in)
    assert torch.equal(mask.sum(1), active.long() * k)


@settings(max_examples=30, deadline=None)
@given(shape=st.tuples(st.integers(1, 20), st.integers(1, 8), st.integers(1, 3)), data=st.data())
def test_random_unstructured_mask_has_exactly_nnz(shape, data):
    numel = shape[0] * shape[1] * shape[2]
    nnz = data.draw(st.integers(0, numel))
    mask = random_unstructured_mask(shape, nnz, torch.Generator().manual_seed(1))
    assert mask.shape == shape and int(mask.sum()) == nnz


def test_random_masks_depend_only_on_the_seed():
    a = random_fan_in_mask((8, 16), 3, torch.Generator().manual_seed(5))
    b = random_fan_in_mask((8, 16), 3, torch.Generator().manual_seed(5))
    c = random_fan_in_mask((8, 16), 3, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (6, 1, 5)])
def test_conv_masks_are_shaped_like_the_weight(shape):
    mask = random_fan_in_mask(shape, 2, torch.Generator().manual_seed(0))
    assert mask.shape == shape
    assert torch.all(mask.reshape(shape[0], -1).sum(1) == 2)


def test_constant_fan_in_mask_gives_every_active_neuron_floor_budget_over_active():
    from srigl.masks import constant_fan_in_mask

    gen = torch.Generator().manual_seed(0)
    mask = constant_fan_in_mask((50, 40), 0.9, gen, ablate=0.2)
    counts = mask.sum(1)
    assert int((counts == 0).sum()) == 10
    assert set(counts[counts > 0].tolist()) == {(50 * 40 // 10) // 40}


def test_constant_fan_in_mask_counts_a_conv_fan_in_over_channels_and_kernel():
    from srigl.masks import constant_fan_in_mask

    mask = constant_fan_in_mask((8, 3, 3, 3), 0.75, torch.Generator().manual_seed(1))
    assert mask.shape == (8, 3, 3, 3) and mask.dtype == torch.bool
    assert set(mask.flatten(1).sum(1).tolist()) == {(8 * 27 // 4) // 8}


@pytest.mark.parametrize("bad", [1.0, -0.1, "abc", float("nan")])
def test_constant_fan_in_mask_rejects_a_bad_sparsity_naming_it(bad):
    from srigl.masks import constant_fan_in_mask

    with pytest.raises(ValueError, match="sparsity"):
        constant_fan_in_mask((4, 4), bad, torch.Generator())


def test_constant_fan_in_mask_refuses_k_zero_naming_the_layer():
    from srigl.masks import SparsityTooHighError, constant_fan_in_mask

    with pytest.raises(SparsityTooHighError, match="fc9.*k = 0"):
        constant_fan_in_mask((10, 10), 0.995, torch.Generator(), name="fc9")


def test_random_n_m_mask_has_exactly_n_in_every_group_of_m_consecutive_inputs():
    mask = random_n_m_mask((6, 4, 2, 2), 1, 4, torch.Generator().manual_seed(0))
    assert mask.shape == (6, 4, 2, 2) and mask.dtype == torch.bool
    assert torch.all(mask.reshape(6, -1, 4).sum(2) == 1)  # (c, dy, dx) order: one per channel
    with pytest.raises(ValueError, match=r"fan-in 9 of shape \[2, 1, 3, 3\] is not a multiple"):
        random_n_m_mask((2, 1, 3, 3), 2, 4, torch.Generator())
