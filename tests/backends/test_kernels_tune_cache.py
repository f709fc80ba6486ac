"""The tuners' shared cache files (entry checks, merging writes) and timer
(backends.kernels.tune_cache.fastest_interleaved) on a fake clock:
each candidate advances it by its own cost, so the result is exact."""

from __future__ import annotations

import json

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


def test_two_processes_writing_one_cache_file_keep_both_processes_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    machine = {"cpu": "test"}
    first = tune_cache.TuneCache("t", 1, "test tuning")  # two processes: two in-memory copies
    second = tune_cache.TuneCache("t", 1, "test tuning")
    first.entries(machine)[1]["a"] = 1
    second.entries(machine)[1]["b"] = 2  # read before the first one wrote
    first.save(machine)
    second.save(machine)
    path = first.path(machine)
    assert json.loads(path.read_text())["entries"] == {"a": 1, "b": 2}
    assert second.entries(machine)[1] == {"a": 1, "b": 2}


def test_a_bad_entry_read_from_the_file_is_dropped_and_not_merged_back(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    machine = {"cpu": "test"}
    cache = tune_cache.TuneCache("t", 1, "test tuning", lambda e: None if e == 1 else "not 1")
    path = cache.path(machine)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"schema": 1, "machine": machine, "entries": {"ok": 1, "bad": 7}}))
    with pytest.warns(tune_cache.TuneCacheWarning, match="entry 'bad' .*not 1"):
        assert cache.entries(machine)[1] == {"ok": 1}
    cache.entries(machine)[1]["new"] = 1
    cache.save(machine)
    assert json.loads(path.read_text())["entries"] == {"ok": 1, "new": 1}


def test_machine_key_names_the_kernel_sources_so_a_changed_kernel_is_timed_again(tmp_path):
    from backends.kernels.build import source_digest
    from backends.kernels.tune_cache import machine_key

    src = tmp_path / "k.cpp"
    src.write_text("int f() { return 1; }\n")
    before = source_digest([src])
    src.write_text("int f() { return 2; }\n")
    after = source_digest([src])
    assert before != after
    assert machine_key("avx2", 2, before) != machine_key("avx2", 2, after)
    assert "kernels" not in machine_key("avx2", 2)


def _host_gives(monkeypatch, value: float) -> list[int]:
    """core_scaling reads ``value`` (counting its calls); the memo of cores_given starts empty."""
    calls: list[int] = []
    monkeypatch.setattr(tune_cache, "_cores_given", {})
    monkeypatch.setattr(tune_cache, "core_scaling", lambda threads: calls.append(threads) or value)
    return calls


@pytest.mark.parametrize(
    "then,now,threads,again",
    [
        (1.1, 1.9, 2, True),  # timed without the second core, which the host gives now
        (1.1, 1.2, 2, False),  # still withheld: the winner fits this host
        (1.9, 1.9, 2, False),  # timed with both cores
        (1.1, 1.9, None, False),  # the caller names no thread count
        (None, 1.9, 2, False),  # an entry from before cores_given was recorded
        (True, 1.9, 2, False),  # not a number
    ],
)
def test_an_entry_timed_while_the_host_withheld_a_core_is_timed_again_when_it_gives_it(
    monkeypatch, then, now, threads, again
):
    _host_gives(monkeypatch, now)
    monkeypatch.setattr(tune_cache, "load_average", lambda: 0.1)  # quiet by load
    entry = {"variant": 2101, "load_avg_1m": 0.1, "cores_given": then}
    assert tune_cache.tuned_under_load(entry, threads) is again


def test_cores_given_is_measured_once_per_ttl_and_never_below_two_threads(monkeypatch):
    calls = _host_gives(monkeypatch, 1.7)
    now = [100.0]
    monkeypatch.setattr(tune_cache.time, "monotonic", lambda: now[0])
    assert tune_cache.cores_given(2) == 1.7 and tune_cache.cores_given(2) == 1.7
    assert calls == [2]
    now[0] += tune_cache.CORES_GIVEN_TTL_S + 1
    tune_cache.cores_given(2)
    assert calls == [2, 2] and tune_cache.cores_given(1) is None


def _is_parallel(key):
    return key == "par"


@pytest.mark.parametrize(
    "given, runs, cores",
    [
        ([1.9], 1, 1.9),  # a serial winner, and the host gave the cores: kept
        ([1.1, 1.9], 2, 1.9),  # withheld at first: timed again once it gives them
        ([1.1, 1.0, 1.2], 3, 1.2),  # withheld throughout: the last try, marked provisional
    ],
    ids=["given", "given-on-retry", "withheld"],
)
def test_a_serial_winner_is_timed_again_while_the_host_withholds_a_core(
    monkeypatch, given, runs, cores
):
    answers = iter(given)
    checks: list[bool] = []

    def scaling(threads):
        checks.append(threads)
        return next(answers)

    monkeypatch.setattr(tune_cache, "core_scaling", scaling)
    monkeypatch.setattr(tune_cache, "_cores_given", {})
    monkeypatch.setattr(tune_cache.time, "sleep", lambda s: None)
    timed: list[int] = []

    def time_fn():
        timed.append(1)
        return {"ser": 1.0, "par": 2.0}

    times, fields = tune_cache.time_while_given(time_fn, 2, _is_parallel)
    assert len(timed) == runs == len(checks) and times == {"ser": 1.0, "par": 2.0}
    assert fields["cores_given"] == cores
    # an entry of the last case is provisional: timed again where the host gives the cores
    entry = {"variant": 2100, "load_avg_1m": 0.1, **fields}
    _host_gives(monkeypatch, 1.9)
    monkeypatch.setattr(tune_cache, "load_average", lambda: 0.1)
    assert tune_cache.tuned_under_load(entry, 2) is (not tune_cache.gave_cores(cores, 2))


def test_a_parallel_winner_or_one_thread_needs_no_fresh_look_at_the_host(monkeypatch):
    def scaling(threads):
        raise AssertionError("measured the host afresh")

    monkeypatch.setattr(tune_cache, "core_scaling", scaling)
    monkeypatch.setattr(tune_cache, "cores_given", lambda threads, fresh=False: None)
    fast_par = {"ser": 2.0, "par": 1.0}
    times, fields = tune_cache.time_while_given(lambda: fast_par, 2, _is_parallel)
    assert times == fast_par and set(fields) == {"load_avg_1m", "cores_given"}
    times, _ = tune_cache.time_while_given(lambda: {"ser": 1.0}, 1, _is_parallel)
    assert times == {"ser": 1.0}
    # serial candidates only (nothing parallel was timed): nothing to suspect either
    times, _ = tune_cache.time_while_given(lambda: {"ser": 1.0}, 2, _is_parallel)
    assert times == {"ser": 1.0}
