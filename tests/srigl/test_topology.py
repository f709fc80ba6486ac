"""The vectorised drop/grow primitives: exact counts, deterministic ties, per-row growth."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from srigl.topology import (
    drop_grow_fan_in,
    drop_grow_n_m,
    drop_grow_unstructured,
    neurons_to_keep,
    row_top_mask,
    salient_counts,
    top_n_mask,
    weight_salient,
)


def test_top_n_mask_breaks_ties_by_lower_index_and_never_picks_minus_inf():
    score = torch.tensor([1.0, 3.0, 3.0, float("-inf"), 3.0, 2.0])
    assert top_n_mask(score, 2).tolist() == [False, True, True, False, False, False]
    assert top_n_mask(score, 10).tolist() == [True, True, True, False, True, True]
    assert not top_n_mask(score, 0).any()


@settings(max_examples=40, deadline=None)
@given(
    values=st.lists(st.integers(-3, 3), min_size=1, max_size=60),
    n=st.integers(0, 70),
)
def test_top_n_mask_selects_the_n_largest_like_a_stable_sort(values, n):
    score = torch.tensor(values, dtype=torch.float32)
    order = torch.sort(score, descending=True, stable=True).indices[:n]
    expected = torch.zeros(len(values), dtype=torch.bool)
    expected[order] = True
    assert torch.equal(top_n_mask(score, n), expected)


def test_row_top_mask_takes_a_different_count_per_row():
    score = torch.tensor([[1.0, 5.0, 3.0], [2.0, 2.0, 2.0], [0.0, 1.0, 2.0]])
    got = row_top_mask(score, torch.tensor([1, 2, 0]))
    assert got.tolist() == [[False, True, False], [True, True, False], [False, False, False]]


@settings(max_examples=30, deadline=None)
@given(out=st.integers(1, 12), fan_in=st.integers(2, 20), seed=st.integers(0, 999), data=st.data())
def test_drop_grow_fan_in_gives_every_active_row_exactly_k(out, fan_in, seed, data):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, fan_in, generator=gen)
    mask = torch.rand(out, fan_in, generator=gen) < 0.5
    active = torch.rand(out, generator=gen) < 0.7
    k = data.draw(st.integers(1, fan_in))
    n_keep = data.draw(st.integers(0, int(mask.sum())))
    kept, new = drop_grow_fan_in(
        weight, mask, torch.randn(out, fan_in, generator=gen), active, n_keep, k
    )
    assert torch.equal(new.sum(1), active.long() * k)
    assert not (kept & ~mask).any(), "kept a position that was not active"
    assert not (kept & ~active.view(-1, 1)).any()
    assert (kept <= new).all()


@settings(max_examples=30, deadline=None)
@given(out=st.integers(2, 12), fan_in=st.integers(3, 20), seed=st.integers(0, 999), data=st.data())
def test_drop_grow_fan_in_spends_the_remainder_on_exactly_extra_rows(out, fan_in, seed, data):
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out, fan_in, generator=gen)
    mask = torch.rand(out, fan_in, generator=gen) < 0.5
    active = torch.rand(out, generator=gen) < 0.7
    active[0] = True
    k = data.draw(st.integers(1, fan_in - 1))
    extra = data.draw(st.integers(0, int(active.sum()) - 1))
    n_keep = data.draw(st.integers(0, int(mask.sum())))
    kept, new = drop_grow_fan_in(
        weight, mask, torch.randn(out, fan_in, generator=gen), active, n_keep, k, extra=extra
    )
    rows = new.sum(1)
    assert int(rows.sum()) == k * int(active.sum()) + extra
    assert torch.equal(rows[~active], torch.zeros_like(rows[~active]))
    assert int((rows[active] == k + 1).sum()) == extra
    assert bool(((rows[active] == k) | (rows[active] == k + 1)).all())
    assert (kept <= new).all() and not (kept & ~mask).any()


def test_the_extra_weight_goes_to_the_rows_that_kept_the_most():
    # rows 1 and 2 keep 3 weights each (k = 2, 2 extra slots), row 0 keeps 1: rows 1 and 2
    # keep all three; then row 0 versus row 3 (1 kept each) is decided by the grow score
    weight = torch.tensor(
        [[5.0, 0, 0, 0, 0], [4.0, 3.0, 2.0, 0, 0], [1.0, 1.5, 2.5, 0, 0], [0, 0, 0, 0, 6.0]]
    )
    mask = weight != 0
    grow = torch.tensor([[0, 1.0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 9.0, 0, 0, 0]])
    active = torch.ones(4, dtype=torch.bool)
    kept, new = drop_grow_fan_in(weight, mask, grow, active, n_keep=8, k=2, extra=2)
    assert new.sum(1).tolist() == [2, 3, 3, 2]
    assert torch.equal(kept[1:3], mask[1:3])
    _, new = drop_grow_fan_in(weight, mask, grow, active, n_keep=8, k=2, extra=3)
    assert new.sum(1).tolist() == [2, 3, 3, 3]  # row 3's best free score (9) beats row 0's (1)


def test_drop_keeps_largest_magnitudes_and_grow_follows_the_gradient():
    weight = torch.tensor([[0.1, -0.9, 0.5, 0.0], [0.3, 0.0, 0.0, -0.2]])
    mask = weight != 0
    grad = torch.tensor([[0.0, 0.0, 0.0, 9.0], [0.0, 5.0, 7.0, 0.0]])
    kept, new = drop_grow_unstructured(weight, mask, grad, n_drop=2)
    assert kept.tolist() == [[False, True, True, False], [True, False, False, False]]
    assert new.tolist() == [[False, True, True, True], [True, False, True, False]]


def test_a_neuron_keeping_more_than_k_drops_its_smallest_magnitudes():
    weight = torch.tensor([[4.0, 3.0, 2.0, 1.0], [0.5, 0.0, 0.0, 0.0]])
    mask = weight != 0
    kept, new = drop_grow_fan_in(
        weight, mask, torch.zeros(2, 4), torch.tensor([True, True]), n_keep=5, k=2
    )
    assert kept.tolist() == [[True, True, False, False], [True, False, False, False]]
    assert new.sum(1).tolist() == [2, 2]


def test_salience_and_ablation_switch_off_neurons_below_tau():
    weight = torch.tensor([[3.0, 2.0, 0.0], [0.01, 0.0, 0.0], [1.0, 0.0, 0.0]])
    mask = weight != 0
    grad = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    counts = salient_counts(weight, mask, grad, n_keep=3, n_drop=1)
    assert counts.tolist() == [2, 0, 2]
    assert neurons_to_keep(counts, tau=1, min_active=1).tolist() == [True, False, True]
    # never fewer neurons than can hold the budget
    assert neurons_to_keep(counts, tau=3, min_active=2).tolist() == [True, False, True]


def _overlapping_layer():
    """3 neurons x 4 inputs, 2 active weights each; the largest weights carry the largest grads.

    n_keep = 4 (rows 0 and 1 by |W|), n_drop = 2: the top-2 |grad| positions are row 0's
    active weights, which are in the weight set too; row 2 only has the next largest grads.
    """
    weight = torch.tensor([[5.0, 4.0, 0, 0], [3.0, 2.5, 0, 0], [0.1, 0.2, 0, 0]])
    mask = weight != 0
    grad = torch.tensor([[9.0, 8.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0.5]])
    return weight, mask, grad


def test_salience_is_the_union_of_weight_and_grad_sets_ranked_over_the_whole_layer():
    weight, mask, grad = _overlapping_layer()
    counts = salient_counts(weight, mask, grad, n_keep=4, n_drop=2)
    # the grad set {(0,0), (0,1)} lies inside the weight set: those positions count once
    assert counts.tolist() == [2, 2, 0]
    assert neurons_to_keep(counts, tau=1, min_active=2).tolist() == [True, True, False]
    # the restricted reading (grads only outside the weight set) counts row 2's grads
    # instead and ablates nothing: the two readings ablate different neurons
    by_weight = weight_salient(weight, mask, 4)
    restricted = top_n_mask(grad.masked_fill(by_weight, float("-inf")), 2)
    old_counts = (by_weight | restricted).sum(1)
    assert old_counts.tolist() == [2, 2, 2]
    assert neurons_to_keep(old_counts, tau=1, min_active=2).all()


def test_salience_counts_an_overlapping_position_once():
    weight = torch.tensor([[2.0, 1.0], [0.5, 0.0]])
    mask = weight != 0
    grad = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    # weight set {(0,0), (0,1)}; grad set {(0,0)}: row 0 holds 2 salient positions, not 3
    assert salient_counts(weight, mask, grad, n_keep=2, n_drop=1).tolist() == [2, 0]


def test_n_m_drop_takes_the_layers_lowest_magnitudes_and_each_group_regrows_to_n_by_gradient():
    # one neuron, two groups of 4: [a b . .] [c d . .] with |W| 4 3 | 1 2; drop 1 -> c goes
    w = torch.tensor([[4.0, 3.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0]])
    mask = w != 0
    grad = torch.tensor([[0.0, 0.0, 9.0, 1.0, 0.0, 0.0, 1.0, 5.0]])
    kept, new = drop_grow_n_m(w, mask, grad.abs(), torch.tensor([True]), 3, 2, 4)
    assert kept.tolist() == [[True, True, False, False, False, True, False, False]]
    # the first group is full; the second regrows its best gradient position (column 7)
    assert new.tolist() == [[True, True, False, False, False, True, False, True]]


def test_n_m_update_empties_an_inactive_row_and_trims_a_group_holding_more_than_n():
    w = torch.arange(1.0, 17.0).view(2, 8)
    mask = torch.ones(2, 8, dtype=torch.bool)  # 4 per group: more than n = 2
    kept, new = drop_grow_n_m(w, mask, torch.zeros(2, 8), torch.tensor([True, False]), 16, 2, 4)
    assert new[1].sum() == 0
    assert new[0].view(2, 4).sum(1).tolist() == [2, 2]
    assert new[0].tolist() == [False, False, True, True, False, False, True, True]


def test_drop_grow_fan_in_refuses_an_extra_it_cannot_place():
    import pytest

    weight = torch.randn(3, 4)
    mask = weight.abs() > 0
    active = torch.tensor([True, True, False])
    for extra, k in [(2, 1), (1, 4)]:  # extra >= active rows; k + 1 > fan-in
        with pytest.raises(ValueError, match=rf"extra={extra} with k={k}"):
            drop_grow_fan_in(weight, mask, torch.zeros(3, 4), active, 4, k, extra=extra)
