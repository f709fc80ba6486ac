"""The tuners' shared timer (backends.kernels.tune_cache.fastest_interleaved), on a fake clock:
each candidate advances it by its own cost, so the result is exact."""

from __future__ import annotations

import pytest

import backends.kernels.tune_cache as tune_cache


def _fake_clock(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(tune_cache.time, "perf_counter", lambda: now[0])
    return now


def test_fastest_call_of_each_candidate_with_turns_reversed_every_other_round(monkeypatch):
    now = _fake_clock(monkeypatch)
    order: list[str] = []
    costs = {"a": iter([5e-3, 5e-3] + [4e-3] * 20), "b": iter([1e-3] * 100)}

    def call(key: str) -> None:
        order.append(key)
        now[0] += next(costs[key])

    fns = {key: (lambda key=key: call(key)) for key in costs}
    best = tune_cache.fastest_interleaved(fns, rounds=2, round_seconds=2e-3, min_calls=2)
    assert best == pytest.approx({"a": 4e-3, "b": 1e-3})  # a's slow first calls do not count
    timed = order[4:]  # after warm-up and sizing (two calls each)
    # a: 2e-3 / 5e-3 -> min_calls=2 per round; b: 2e-3 / 1e-3 -> 2 calls per round
    assert timed == ["a", "a", "b", "b", "b", "b", "a", "a"]


def test_a_fast_candidate_gets_more_calls_per_round_up_to_max_calls(monkeypatch):
    now = _fake_clock(monkeypatch)
    counts = {"fast": 0, "slow": 0}

    def call(key: str, cost: float) -> None:
        counts[key] += 1
        now[0] += cost

    fns = {"fast": lambda: call("fast", 1e-6), "slow": lambda: call("slow", 1e-2)}
    tune_cache.fastest_interleaved(fns, rounds=3, round_seconds=2e-3, min_calls=2, max_calls=50)
    assert counts == {"fast": 2 + 3 * 50, "slow": 2 + 3 * 2}
