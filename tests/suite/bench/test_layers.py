"""suite.bench.layers: the A/A control flags a noisy run, the best dense baseline of a run,
one-line errors before any compute; all through the real bench config with synthetic samplers
standing in for the clock where a result must be known."""

from __future__ import annotations

import numpy as np
import pytest

import backends
import backends.timing as timing
import suite.bench.layers as layers
from backends.dense import DenseLinear
from suite import machine
from suite.bench import BenchConfigError, run_bench
from suite.bench.app import noise_check
from suite.results import ResultStore
from tests.suite.bench.test_app import bench_cfg


def _with_sampler(monkeypatch, sampler):
    """Make every paired measurement of the layer bench use the synthetic block ``sampler``."""
    real = timing.paired_ratio

    def paired(candidate, baseline, **kwargs):
        return real(candidate, baseline, **{**kwargs, "block": sampler})

    monkeypatch.setattr(layers, "paired_ratio", paired)


def _lognormal(sigma: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda fn, calls: 1e-4 * float(np.exp(rng.normal(0.0, sigma)))


def test_a_quiet_run_is_not_noisy_and_keeps_its_aa_rows(tmp_path, monkeypatch):
    # a perfectly quiet machine: every block the same (a 95% interval of real noise misses 1.0
    # in 5% of A/A rows by chance: that is the control's false-alarm rate per row)
    _with_sampler(monkeypatch, lambda fn, calls: 1e-4)
    record, _ = run_bench(bench_cfg(tmp_path, "pairs=20", "batches=[1]"))
    aa = [r for r in record["metrics"]["rows"] if r["backend"] == "dense_aa"]
    assert len(aa) == 4 and all(r["mode"] == "end_to_end" for r in aa)  # 2 shapes x 2 sparsities
    assert all(r["speedup_ci_low"] <= 1.0 <= r["speedup_ci_high"] for r in aa)
    assert record["metrics"]["noisy"] is False and record["metrics"]["noisy_reasons"] == []


def test_a_noisy_sampler_marks_the_run_noisy_with_the_reason(tmp_path, monkeypatch, caplog):
    _with_sampler(monkeypatch, _lognormal(0.5))
    record, _ = run_bench(bench_cfg(tmp_path, "pairs=6", "batches=[1]"))
    metrics = record["metrics"]
    assert metrics["noisy"] is True
    assert any("wider than +-10%" in why for why in metrics["noisy_reasons"])
    assert "noisy run" in caplog.text
    stored = ResultStore(tmp_path / "runs").read(kind="bench")[0]
    assert stored["metrics"]["noisy"] is True


def test_noise_check_reads_only_the_aa_rows():
    rows = [
        {"backend": "dense_aa", "in_features": 4, "out_features": 2, "batch": 1,
         "speedup_ci_low": 1.03, "speedup_ci_high": 1.06},
        {"backend": "naive", "speedup_ci_low": 3.0, "speedup_ci_high": 4.0},
    ]  # fmt: skip
    assert noise_check(rows) == ["4->2 batch 1: A/A interval [1.030, 1.060] misses 1.0"]


class FastDense(DenseLinear):
    """A dense baseline backend (``dense_baseline = True``)."""

    dense_baseline = True


def test_speedup_vs_best_dense_divides_by_the_fastest_dense_baseline_of_the_run(
    tmp_path, monkeypatch
):
    monkeypatch.setitem(backends.BACKENDS._entries, "fast_dense", FastDense)
    costs = {FastDense: 0.5e-4, backends.get("naive"): 0.25e-4}
    original = layers._timed_call

    def timed_call(layer, x, mode):  # tag each timed callable with its layer's class
        fn, path, to_rows = original(layer, x, mode)

        def call():
            return fn()

        call.layer_type = type(layer)
        return call, path, to_rows

    def sampler(fn, calls):  # F.linear and the plain dense backend cost 1e-4
        return costs.get(getattr(fn, "layer_type", None), 1e-4)

    monkeypatch.setattr(layers, "_timed_call", timed_call)
    _with_sampler(monkeypatch, sampler)
    record, _ = run_bench(bench_cfg(tmp_path, "backends=[dense,fast_dense,naive]", "batches=[1]"))
    naive = [r for r in record["metrics"]["rows"] if r["backend"] == "naive"]
    assert naive and all(r["best_dense"] == "fast_dense" for r in naive)
    for r in naive:
        assert r["speedup"] == pytest.approx(4.0)
        assert r["speedup_vs_best_dense"] == pytest.approx(2.0)
        assert r["speedup_vs_best_dense_ci_low"] == pytest.approx(2.0)  # a noiseless sampler
        assert r["speedup_vs_best_dense_ci_high"] == pytest.approx(2.0)


@pytest.mark.parametrize("batches", ["[-3]", "[0]"])
def test_bad_batches_fail_before_any_compute(tmp_path, monkeypatch, batches):
    def never(*args, **kwargs):
        raise AssertionError("timed something")

    monkeypatch.setattr(layers, "paired_ratio", never)
    with pytest.raises(BenchConfigError, match="allowed: integers >= 1"):
        run_bench(bench_cfg(tmp_path, f"batches={batches}"))
    assert ResultStore(tmp_path / "runs").files() == []


def test_the_row_schema_takes_old_rows_and_complete_intervals_only():
    from suite.results import InvalidRecordError, validate_record

    old = {
        "backend": "fused", "in_features": 8, "out_features": 4, "sparsity": 0.5, "batch": 1,
        "dtype": "float32", "threads": 1, "mode": "kernel", "median_s": 1e-5, "iqr_s": 0.0,
        "dense_median_s": 2e-5,
    }  # fmt: skip
    new = {**old, "speedup": 2.0, "speedup_ci_low": 1.8, "speedup_ci_high": 2.2, "n_pairs": 20}
    record = make_record_for([old, new])
    validate_record(record)
    for bad, match in (
        ({**old, "speedup": 2.0}, "lacks"),
        ({**new, "speedup_ci_low": 2.1}, "outside its interval"),
        ({**new, "n_pairs": 1}, "n_pairs 1 is invalid"),
    ):
        with pytest.raises(InvalidRecordError, match=match):
            validate_record(make_record_for([bad]))


def make_record_for(rows):
    """A bench record around ``rows`` (validated only by the caller)."""
    return {
        "schema_version": 1, "kind": "bench", "run_id": "r", "created": "now", "git": {},
        "host": {}, "versions": {}, "config": {}, "metrics": {"rows": rows},
    }  # fmt: skip


def test_a_host_that_withheld_a_core_marks_the_run_noisy(tmp_path, monkeypatch):
    # quiet blocks, but the host gave the 2-thread run 1.1 cores at its start and end
    _with_sampler(monkeypatch, lambda fn, calls: 1e-4)
    monkeypatch.setattr(machine, "core_scaling", lambda threads, **kw: 1.1)
    record, _ = run_bench(bench_cfg(tmp_path, "pairs=20", "batches=[1]", "threads=2"))
    metrics = record["metrics"]
    assert metrics["core_scaling_start"] == 1.1 and metrics["core_scaling_end"] == 1.1
    assert record["host"]["load_start"]["core_scaling"] == 1.1
    assert record["host"]["load_end"]["core_scaling"] == 1.1
    assert metrics["noisy"] is True
    assert any("1.10 of 2 cores at the start" in why for why in metrics["noisy_reasons"])
    monkeypatch.setattr(machine, "core_scaling", lambda threads, **kw: 1.9)
    record, _ = run_bench(bench_cfg(tmp_path, "pairs=20", "batches=[1]", "threads=2"))
    assert record["metrics"]["noisy"] is False
