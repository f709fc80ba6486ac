"""Masks loaded from a state dict (a checkpoint on resume) are checked against the invariants."""

from __future__ import annotations

import pytest
import torch
from sparse_checks import assert_invariants, toy_mlp

import srigl
from srigl.errors import StateDictError
from srigl.trainers.base import STATE_VERSION


def _make(name, **kwargs):
    model = toy_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {"sparsity": 0.8, "total_steps": 40, "delta_t": 4, **kwargs}
    return srigl.create_trainer(name, model, opt, **kwargs)


def _one_more_in_row(mask, row=0):
    mask = mask.clone()
    mask[row, (~mask[row]).nonzero()[0]] = True
    return mask


@pytest.mark.parametrize(
    "name,kwargs,tamper,match",
    [
        ("srigl", {}, _one_more_in_row, r"keep 4\.\.5 non-zeros; allowed: k = .* = 4 each \("),
        # one neuron ablated: 47 active hold 4 each, 4 of them must hold 5 (B = 192)
        ("srigl", {}, lambda m: m & (torch.arange(48) > 0)[:, None],
         r"47 active neurons keep 4\.\.4 non-zeros; allowed: .* k \+ 1 in exactly 4 of them"),
        ("rigl", {}, _one_more_in_row, r"B = 192\) has 193 non-zeros; allowed: exactly B"),
        ("rigl", {"constant_fan_in": True}, lambda m: m & (torch.arange(48) > 0)[:, None],
         r"1 ablated neurons; allowed: none"),
        ("srigl", {"ablation": False}, lambda m: m & (torch.arange(48) > 0)[:, None],
         r"keep 4\.\.4 non-zeros|ablated neurons; allowed: none"),
        ("static", {}, lambda m: m.float() * 0.5, r"values other than 0 and 1"),
        ("srigl", {}, lambda m: torch.zeros_like(m), r"no active neuron"),
    ],
)  # fmt: skip
def test_a_loaded_mask_that_breaks_the_invariants_is_refused(name, kwargs, tamper, match):
    trainer = _make(name, **kwargs)
    state = trainer.state_dict()
    before = {n: m.clone() for n, m in trainer.masks.items()}
    state["masks"]["0.weight"] = tamper(state["masks"]["0.weight"])
    other = _make(name, **kwargs)
    with pytest.raises(StateDictError, match=rf"mask '0.weight' .*{match}"):
        other.load_state_dict(state)
    assert all(torch.equal(other.masks[n], m) for n, m in before.items())  # left untouched


@pytest.mark.parametrize("name", ["static", "set", "rigl", "srigl"])
def test_a_valid_state_loads(name):
    trainer = _make(name)
    other = _make(name, seed=5)
    other.load_state_dict(trainer.state_dict())
    assert all(torch.equal(other.masks[n], m) for n, m in trainer.masks.items())
    assert_invariants(other)


def test_a_version_1_state_saved_under_the_old_budgets_is_refused_with_a_hint():
    trainer = _make("rigl")
    assert trainer.state_dict()["version"] == STATE_VERSION == 3
    state = trainer.state_dict()
    state["version"] = 1
    state["masks"]["0.weight"] = _one_more_in_row(state["masks"]["0.weight"])  # old budget
    with pytest.raises(StateDictError, match="version 1 .* saved before it") as err:
        _make("rigl").load_state_dict(state)
    message = str(err.value)
    assert "7bca2d3" in message and "193 non-zeros" in message and "\n" not in message


def test_a_version_1_state_whose_masks_fit_the_equal_budgets_loads():
    # commits from 7bca2d3 until the version bump saved equal-budget states as version 1
    trainer = _make("srigl")
    state = {**trainer.state_dict(), "version": 1}
    other = _make("srigl", seed=5)
    other.load_state_dict(state)
    assert all(torch.equal(other.masks[n], m) for n, m in trainer.masks.items())


def test_a_state_of_a_newer_version_is_refused():
    state = {**_make("set").state_dict(), "version": STATE_VERSION + 1}
    with pytest.raises(StateDictError, match=r"version 4; allowed: 1\.\.3"):
        _make("set").load_state_dict(state)


def _ablate_row_0_and_give_its_weights_to_others(mask):
    """Row 0 ablated; its k weights go one each to rows 1..k (B = k * n_active + k)."""
    mask = mask.clone()
    k = int(mask[0].sum())
    mask[0] = False
    for row in range(1, k + 1):
        mask = _one_more_in_row(mask, row)
    return mask


def test_an_ablated_srigl_state_that_holds_the_whole_budget_loads():
    trainer = _make("srigl")
    state = trainer.state_dict()
    state["masks"]["0.weight"] = _ablate_row_0_and_give_its_weights_to_others(
        state["masks"]["0.weight"]
    )
    other = _make("srigl", seed=5)
    other.load_state_dict(state)
    assert torch.equal(other.masks["0.weight"], state["masks"]["0.weight"])
    assert_invariants(other)


def test_a_version_2_state_of_the_floor_rule_is_refused_with_a_hint():
    # before version 3 an ablated SRigL layer held floor(B / n_active) per neuron
    state = {**_make("srigl").state_dict(), "version": 2}
    state["masks"]["0.weight"] = state["masks"]["0.weight"] & (torch.arange(48) > 0)[:, None]
    with pytest.raises(StateDictError, match="version 2 .* remainder rule") as err:
        _make("srigl").load_state_dict(state)
    assert "k + 1 in exactly 4 of them" in str(err.value) and "\n" not in str(err.value)


def test_check_masks_passes_live_masks_and_names_a_broken_one():
    trainer = _make("srigl")
    trainer.check_masks()
    trainer.masks["0.weight"].copy_(_one_more_in_row(trainer.masks["0.weight"]))
    with pytest.raises(StateDictError, match=r"mask '0.weight' .*keep 4\.\.5 non-zeros"):
        trainer.check_masks()
