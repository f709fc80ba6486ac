"""The condensed form: constant fan-in validation, layout, and state-dict save/load."""

from __future__ import annotations

import io

import pytest
import torch
from backend_cases import CASES, constant_fan_in_layer, cpu_layer, skip_unless_supported

import backends
from backends.condensed import CondensedLinear, FanInError, condense_layer

CONDENSED = [n for n in backends.names() if issubclass(backends.get(n), CondensedLinear)]


def test_condense_layer_keeps_sorted_indices_and_the_masked_values():
    case = CASES[0]
    weight, mask, bias = constant_fan_in_layer(case, 0)
    parts = condense_layer(weight, mask, bias)
    active, values, indices = parts["active"], parts["values"], parts["indices"]
    assert torch.equal(active, torch.nonzero(mask.any(1)).flatten())
    assert values.shape == indices.shape == (case.n_active, case.k)
    assert indices.dtype == torch.int32 and active.dtype == torch.int64
    assert bool((indices[:, 1:] > indices[:, :-1]).all())
    rebuilt = torch.zeros_like(weight)
    rebuilt[active[:, None], indices.long()] = values
    assert torch.equal(rebuilt, weight * mask)


def test_rows_keeping_k_or_k_plus_1_condense_at_k_plus_1_with_one_zero_slot():
    case = next(c for c in CASES if c.extra)
    weight, mask, bias = constant_fan_in_layer(case, 3)
    weight[~mask] = 5.0  # a stale weight outside the mask must not leak into the zero slot
    parts = condense_layer(weight, mask, bias)
    active, values, indices = parts["active"], parts["values"], parts["indices"]
    assert values.shape == indices.shape == (case.n_active, case.k + 1)
    assert bool((indices[:, 1:] > indices[:, :-1]).all())
    assert int((values == 0).sum(1).gt(0).sum()) == case.n_active - case.extra
    rebuilt = torch.zeros_like(weight)
    rebuilt[active[:, None], indices.long()] = values
    assert torch.equal(rebuilt, weight * mask)


def test_rows_two_apart_are_still_refused():
    weight = torch.randn(3, 8)
    mask = torch.zeros(3, 8, dtype=torch.bool)
    mask[0, :2] = mask[1, :4] = mask[2, :3] = True
    with pytest.raises(FanInError, match=r"2\.\.4.*k and k \+ 1"):
        condense_layer(weight, mask)


@pytest.mark.parametrize("name", CONDENSED)
def test_condensed_backends_reject_non_constant_fan_in_naming_layer_and_range(name):
    skip_unless_supported(name, "cpu", torch.float32)
    weight = torch.randn(4, 10)
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[0, :3] = True
    mask[1, :5] = True  # row 2 ablated, row 3 has 3
    mask[3, 4:7] = True
    with pytest.raises(FanInError, match=r"'blocks\.0\.fc1'.*3\.\.5") as info:
        backends.create(name, weight, mask, None, layer_name="blocks.0.fc1")
    assert isinstance(info.value, ValueError)


def test_structured_and_dense_accept_any_mask():
    weight, bias = torch.randn(4, 10), torch.randn(4)
    mask = torch.rand(4, 10) > 0.5
    mask[2] = False
    x = torch.randn(3, 10)
    for name in ("dense", "structured"):
        y = backends.create(name, weight, mask, bias)(x)
        torch.testing.assert_close(y, torch.nn.functional.linear(x, weight * mask, bias))


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("name", backends.names())
def test_state_dict_save_and_from_state_dict_rebuild_the_same_layer(name):
    case = CASES[0]
    layer, *_ = cpu_layer(name, 5)
    x = torch.randn(6, case.in_features)
    state = _roundtrip(layer.state_dict())
    rebuilt = backends.get(name).from_state_dict(state)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), layer(x))
    assert (rebuilt.in_features, rebuilt.out_features) == (case.in_features, case.out_features)


@pytest.mark.parametrize("name", backends.names())
def test_load_state_dict_resizes_buffers_of_a_differently_masked_layer(name):
    case = CASES[0]
    saved, *_ = cpu_layer(name, 6)
    other_case = CASES[3]  # other shapes, other k, other n_active
    w2, m2, b2 = constant_fan_in_layer(other_case, 7)
    target = backends.create(name, w2, m2, b2)
    target.load_state_dict(_roundtrip(saved.state_dict()))
    x = torch.randn(5, case.in_features)
    with torch.no_grad():
        assert torch.equal(target(x), saved(x))


@pytest.mark.parametrize("src", CONDENSED)
def test_condensed_state_dicts_load_across_backends(src):
    case = CASES[0]
    layer, weight, mask, bias = cpu_layer(src, 8)
    state = _roundtrip(layer.state_dict())
    x = torch.randn(2, case.in_features)
    ref = torch.nn.functional.linear(x, weight * mask, bias)
    for dst in CONDENSED:
        if not backends.get(dst).supports("cpu", torch.float32)[0]:
            continue
        with torch.no_grad():
            y = backends.get(dst).from_state_dict(state)(x)
        torch.testing.assert_close(y, ref, msg=f"{src} -> {dst}")


def test_from_state_dict_names_missing_keys():
    with pytest.raises(ValueError, match=r"missing key 'values'.*expected"):
        backends.get("naive").from_state_dict({"active": torch.zeros(0)})


@pytest.mark.parametrize("name", backends.names())
def test_deepcopy_and_to_rebuild_the_kernel_state(name):
    import copy

    case = CASES[0]
    layer, *_ = cpu_layer(name, 9)
    x = torch.randn(3, case.in_features)
    with torch.no_grad():
        ref = layer(x)
        twin = copy.deepcopy(layer)
        assert torch.equal(twin(x), ref)
        for buf in twin.buffers():
            if buf.is_floating_point():
                buf.mul_(0)  # the copy owns its memory: the original is untouched
        assert torch.equal(layer(x), ref)
        assert torch.equal(layer.to("cpu", torch.float32)(x), ref)
