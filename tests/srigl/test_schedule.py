"""The update schedule: when updates happen, the cosine drop fraction, the accumulation window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srigl.errors import SparsityConfigError
from srigl.schedule import UpdateSchedule


def test_first_update_is_at_delta_t_and_none_at_or_after_t_end():
    s = UpdateSchedule(total_steps=1000, delta_t=100, t_end_fraction=0.75)
    assert s.t_end == 750
    steps = [t for t in range(0, 2000) if s.is_update_step(t)]
    assert steps == [100, 200, 300, 400, 500, 600, 700] == s.update_steps()


def test_an_update_exactly_at_t_end_does_not_happen():
    s = UpdateSchedule(total_steps=800, delta_t=100, t_end_fraction=0.75)
    assert s.t_end == 600 and not s.is_update_step(600) and s.is_update_step(500)


@settings(max_examples=40, deadline=None)
@given(
    t=st.integers(0, 10_000),
    total=st.integers(1, 10_000),
    alpha=st.floats(0, 1),
    frac=st.floats(0.01, 1.0),
)
def test_drop_fraction_follows_the_cosine_schedule(t, total, alpha, frac):
    s = UpdateSchedule(total_steps=total, delta_t=1, alpha=alpha, t_end_fraction=frac)
    t_end = math.floor(frac * total)
    expected = alpha / 2 * (1 + math.cos(math.pi * t / t_end)) if t_end > 0 else 0.0
    assert s.drop_fraction(t) == pytest.approx(expected, abs=1e-12)


def test_drop_fraction_starts_at_alpha_and_reaches_zero_at_t_end():
    s = UpdateSchedule(total_steps=400, delta_t=10, alpha=0.3, t_end_fraction=0.5)
    assert s.drop_fraction(0) == pytest.approx(0.3)
    assert s.drop_fraction(100) == pytest.approx(0.15)
    assert s.drop_fraction(200) == pytest.approx(0.0, abs=1e-12)


def test_gradients_accumulate_in_the_n_steps_ending_with_each_update():
    s = UpdateSchedule(total_steps=100, delta_t=10, grad_accumulation_n=3, t_end_fraction=0.75)
    window = [t for t in range(1, 100) if s.accumulates(t)]
    expected = [t for u in range(10, 75, 10) for t in (u - 2, u - 1, u)]
    assert window == expected


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"delta_t": 0}, r"delta_t=0.*> 0"),
        ({"delta_t": -5}, r"delta_t=-5"),
        ({"total_steps": 0}, r"total_steps=0"),
        ({"total_steps": None}, r"total_steps=None.*integer > 0"),
        ({"alpha": 1.5}, r"alpha=1.5"),
        ({"t_end_fraction": 0.0}, r"t_end_fraction=0.0"),
        ({"grad_accumulation_n": 0}, r"grad_accumulation_n=0.*\[1, delta_t=100\]"),
        ({"grad_accumulation_n": 101}, r"grad_accumulation_n=101"),
    ],
)
def test_bad_schedule_values_name_the_value_and_the_allowed_range(kwargs, pattern):
    args = {"total_steps": 1000, **kwargs}
    with pytest.raises(SparsityConfigError, match=pattern):
        UpdateSchedule(**args)


def test_a_huge_schedule_is_checked_without_listing_its_update_steps():
    import warnings

    import torch

    import srigl

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an update is possible: no warning
        trainer = srigl.create_trainer(
            "rigl", model, opt, sparsity=0.5, total_steps=10**12, delta_t=1
        )
    assert trainer.schedule.next_update_step(1) == 1


def test_numpy_integers_pass_the_up_front_check_and_the_schedule_alike():
    """One copy of the schedule rules: a value the trainer's argument check accepts is one the
    schedule accepts (numpy ints passed the first and failed the second)."""
    import numpy as np
    import torch

    import srigl

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer(
        "rigl", model, opt, sparsity=0.5, total_steps=np.int64(100), delta_t=np.int32(10)
    )
    assert trainer.schedule.delta_t == 10 and type(trainer.schedule.delta_t) is int
