"""The one timer (backends.timing): ABBA order, the paired-ratio estimator's coverage on synthetic
samples with a known ratio, intervals that widen with noise, errors before any call."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from backends import timing


def _synthetic_pairs(rng: np.random.Generator, ratio: float, noise: float, n: int):
    """Blocks of a baseline at 1 ms and a candidate ``ratio`` times faster, both multiplied by a
    shared load factor per round (what pairing cancels) and their own log-normal noise."""
    load = np.exp(rng.normal(0.0, 0.5, n))
    base = 1e-3 * load * np.exp(rng.normal(0.0, noise, n))
    cand = 1e-3 / ratio * load * np.exp(rng.normal(0.0, noise, n))
    return base, cand


@pytest.mark.parametrize("n_pairs", [10, 30])
def test_the_interval_covers_the_true_ratio_about_95_percent_of_the_time(n_pairs):
    rng = np.random.default_rng(1)
    trials, hits = 400, 0
    for t in range(trials):
        base, cand = _synthetic_pairs(rng, 2.0, 0.1, n_pairs)
        _, low, high = timing.ratio_interval(base, cand, n_bootstrap=1000, seed=t)
        hits += low <= 2.0 <= high
    assert 0.91 <= hits / trials <= 0.985, hits / trials


def test_the_estimate_is_the_ratio_and_the_interval_widens_with_noise():
    rng = np.random.default_rng(2)
    widths = []
    for noise in (0.01, 0.05, 0.2):
        base, cand = _synthetic_pairs(rng, 3.0, noise, 40)
        est, low, high = timing.ratio_interval(base, cand)
        assert low <= est <= high
        assert est == pytest.approx(3.0, rel=4 * noise)
        widths.append(math.log(high / low))
    assert widths[0] < widths[1] < widths[2]


def test_shared_load_cancels_in_the_pairs():
    load = np.array([1.0, 5.0, 1.0, 9.0, 2.0, 1.0])  # the machine's load moves 9x
    est, low, high = timing.ratio_interval(2e-3 * load, 1e-3 * load)
    assert (est, low, high) == pytest.approx((2.0, 2.0, 2.0))


def test_two_callables_alternate_in_abba_order():
    order: list[str] = []

    def block(fn, calls):
        fn()
        return 1.0

    fns = {"a": lambda: order.append("a"), "b": lambda: order.append("b")}
    samples = timing.interleaved_blocks(fns, 4, {"a": 1, "b": 1}, block)
    assert order == ["a", "b", "b", "a", "a", "b", "b", "a"]
    assert samples == {"a": [1.0] * 4, "b": [1.0] * 4}


def test_paired_ratio_keeps_the_per_block_samples_and_fields():
    costs = {"base": 4e-3, "cand": 1e-3}

    def block(fn, calls):
        return costs[fn()]

    result = timing.paired_ratio(lambda: "cand", lambda: "base", pairs=6, block=block)
    assert result.speedup == pytest.approx(4.0)
    assert result.candidate_s == [1e-3] * 6 and result.baseline_s == [4e-3] * 6
    fields = result.fields()
    assert set(fields) == {"speedup", "speedup_ci_low", "speedup_ci_high", "n_pairs"}
    assert fields["n_pairs"] == 6
    assert not result.ci_low <= 1.0 <= result.ci_high


def test_paired_ratios_times_every_candidate_against_the_same_baseline_blocks():
    costs = {"base": 2e-3, "x": 1e-3, "y": 4e-3}
    ran: list[str] = []

    def block(fn, calls):  # every block a different time: a baseline block per candidate
        ran.append(fn())  # would give the two candidates different baseline samples
        return costs[ran[-1]] * (1 + len(ran) / 1000)

    ratios = timing.paired_ratios(
        lambda: "base", {"x": lambda: "x", "y": lambda: "y"}, pairs=4, block=block
    )
    assert ratios["x"].speedup == pytest.approx(2.0, rel=0.02)
    assert ratios["y"].speedup == pytest.approx(0.5, rel=0.02)
    assert len(ratios["x"].baseline_s) == 4 and ratios["x"].baseline_s == ratios["y"].baseline_s
    assert ran.count("base") == 4  # one baseline block per round, shared by the candidates


def test_a_real_callable_is_timed_by_wall_clock():
    result = timing.paired_ratio(
        lambda: sum(range(50)), lambda: sum(range(50)), pairs=3, block_seconds=1e-3, threads=1
    )
    assert result.n_pairs == 3 and all(t > 0 for t in result.candidate_s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pairs": 1}, "pairs=1 is invalid; allowed: an integer >= 2"),
        ({"pairs": 2.5}, "pairs=2.5 is invalid"),
        ({"block_seconds": 0}, "block_seconds=0 is invalid; allowed: > 0 seconds"),
        ({"threads": 0}, "threads=0 is invalid; allowed: an integer >= 1 or None"),
    ],
)
def test_bad_arguments_fail_with_one_line_before_any_call(kwargs, message):
    called = []
    with pytest.raises(timing.TimingError, match=message.replace("(", r"\(")):
        timing.paired_ratio(lambda: called.append(1), lambda: called.append(1), **kwargs)
    assert not called


@pytest.mark.parametrize(
    ("base", "cand", "message"),
    [
        ([1.0], [1.0], "1 pair"),
        ([1.0, 1.0], [1.0], "one length"),
        ([1.0, 0.0], [1.0, 1.0], "> 0 seconds"),
    ],
)
def test_ratio_interval_rejects_bad_samples(base, cand, message):
    with pytest.raises(timing.TimingError, match=message):
        timing.ratio_interval(base, cand)


def test_calls_per_block_fills_the_block_within_its_limits():
    assert timing.calls_per_block(lambda: None, 1e-3, 1, 5) == 5
    with pytest.raises(timing.TimingError, match="block_seconds=-1"):
        timing.calls_per_block(lambda: None, -1)


def test_aa_noise_flags_a_synthetic_noisy_sampler_and_passes_a_quiet_one():
    rng = np.random.default_rng(3)

    def sampler(sigma):
        return lambda fn, calls: 1e-3 * float(np.exp(rng.normal(0.0, sigma)))

    quiet = timing.paired_ratio(lambda: None, lambda: None, pairs=20, block=sampler(0.01))
    noisy = timing.paired_ratio(lambda: None, lambda: None, pairs=20, block=sampler(0.6))
    assert timing.aa_noise(quiet.ci_low, quiet.ci_high) is None
    assert "wider than +-10%" in timing.aa_noise(noisy.ci_low, noisy.ci_high)
    assert "misses 1.0" in timing.aa_noise(1.02, 1.05)


def test_verdict_reads_an_interval():
    assert timing.verdict(1.1, 1.3) == "faster"
    assert timing.verdict(0.5, 0.9) == "slower"
    assert timing.verdict(0.95, 1.2) == timing.NO_DIFFERENCE
    assert timing.verdict(None, None) == "no interval"


def test_the_quotient_of_two_speedups_over_one_baseline_has_an_interval():
    rng = np.random.default_rng(4)
    fast = _synthetic_pairs(rng, 4.0, 0.05, 20)  # (baseline, candidate) blocks
    slow = _synthetic_pairs(rng, 2.0, 0.05, 20)
    est, low, high = timing.quotient_interval(fast, slow)
    assert low < 2.0 < high and est == pytest.approx(2.0, rel=0.1)
    same, lo, hi = timing.quotient_interval(fast, fast)
    assert same == pytest.approx(1.0) and lo < 1.0 < hi
    with pytest.raises(timing.TimingError, match="one length"):
        timing.quotient_interval(([1.0, 1.0], [1.0]), slow)


class _FakeHost:
    """torch.mm and time.perf_counter of a host that gives ``cores`` cores: one product takes
    1 / min(threads, cores) time units on torch's current thread count."""

    def __init__(self, cores: float) -> None:
        self.cores, self.now, self.threads_seen = cores, 0.0, set()

    def mm(self, a, b):
        n = torch.get_num_threads()
        self.threads_seen.add(n)
        self.now += 1.0 / min(n, self.cores)

    def clock(self) -> float:
        return self.now


@pytest.mark.parametrize("cores,expected", [(2.0, 2.0), (1.3, 1.3), (1.0, 1.0)])
def test_core_scaling_is_one_thread_time_over_n_thread_time(monkeypatch, cores, expected):
    host = _FakeHost(cores)
    monkeypatch.setattr(timing.torch, "mm", host.mm)
    monkeypatch.setattr(timing.time, "perf_counter", host.clock)
    before = torch.get_num_threads()
    assert timing.core_scaling(2, blocks=3) == pytest.approx(expected)
    assert host.threads_seen == {1, 2} and torch.get_num_threads() == before
    assert timing.core_scaling(1) is None
