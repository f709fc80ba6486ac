"""suite.bench.roofline: the machine probe's arithmetic (on a fake clock), its cache, the
roofline fields of a timing, and the ``python -m suite.bench machine`` command."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

import suite
from suite.bench import roofline
from suite.bench.roofline import MachineProbe, best_rate, roofline_fields
from suite.machine import identity

ROOT = Path(suite.__file__).resolve().parent.parent


class FakeClock:
    """A clock that only moves when the fake work runs."""

    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


class FakeOps:
    """``torch.ops.srigl_dense`` stand-in: 32 FLOPs per FMA iteration per thread, one iteration
    per nanosecond of the fake clock; reads at ``gbs[buffer bytes]`` GB/s."""

    def __init__(self, clock: FakeClock, gbs: dict[int, float]) -> None:
        self.clock, self.gbs = clock, gbs

    def dense_isa(self) -> int:
        return 1

    def dense_probe_fma_flops_per_iter(self) -> int:
        return 32

    def dense_probe_fma(self, iters: int, threads: int) -> float:
        self.clock.t += iters * 1e-9
        return 0.0

    def dense_probe_read(self, buf, reps: int, threads: int) -> float:
        nbytes = buf.numel() * 4
        self.clock.t += reps * nbytes / (self.gbs[nbytes] * 1e9)
        return 0.0


def _probe(**changes) -> MachineProbe:
    fields = dict(
        machine="test-machine",
        threads=2,
        fma_gflops=100.0,
        fma_source="fake",
        bandwidth_gbs={"l2": 50.0, "l3": 30.0, "memory": 10.0},
        read_source="fake",
        cache_bytes={"l2": 1 << 20, "l3": 32 << 20},
        buffer_bytes={"l2": 1 << 19, "l3": 8 << 20, "memory": 256 << 20},
    )
    fields.update(changes)
    return MachineProbe(**fields)


def test_best_rate_doubles_reps_until_min_seconds_and_divides_work_by_the_fastest_call():
    clock = FakeClock()
    calls = []

    def run(reps: int) -> None:
        calls.append(reps)
        clock.t += reps * 1e-3 * (2 if len(calls) == 7 else 1)  # one slow call (load)

    rate = best_rate(run, work_per_rep=5.0, clock=clock, min_seconds=0.01, repeats=3)
    assert calls == [1, 2, 4, 8, 16, 16, 16, 16]  # 16 ms >= 10 ms, then 3 timed calls
    assert rate == pytest.approx(16 * 5.0 / 16e-3)


def test_best_rate_refuses_a_clock_that_does_not_advance():
    with pytest.raises(ValueError, match="must advance"):
        best_rate(lambda n: None, 1.0, clock=lambda: 0.0, min_seconds=0.0, repeats=2)


def test_probe_turns_fake_kernel_times_into_gflops_and_gbs():
    clock = FakeClock()
    buffers = {"l2": 4096, "l3": 8192, "memory": 16384}
    ops = FakeOps(clock, {4096: 40.0, 8192: 25.0, 16384: 8.0})
    probe = roofline.probe_machine(
        threads=2, clock=clock, min_seconds=1e-3, repeats=2, ops=ops, buffers=buffers
    )
    assert probe.fma_gflops == pytest.approx(64.0)  # 32 FLOPs x 2 threads per ns
    assert probe.bandwidth_gbs == pytest.approx({"l2": 40.0, "l3": 25.0, "memory": 8.0})
    assert probe.threads == 2 and probe.machine == identity()["asv_name"]
    assert "avx2" in probe.fma_source and probe.buffer_bytes == buffers
    assert MachineProbe.from_json(json.loads(json.dumps(probe.to_json()))) == probe


def test_cache_sizes_read_from_sysfs_skip_the_instruction_cache(tmp_path):
    for i, (level, kind, size) in enumerate(
        [
            (1, "Data", "48K"),
            (1, "Instruction", "32K"),
            (2, "Unified", "1024K"),
            (3, "Unified", "32M"),
        ]
    ):
        d = tmp_path / f"index{i}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert roofline.cache_sizes(tmp_path) == {"l1": 48 << 10, "l2": 1 << 20, "l3": 32 << 20}
    assert roofline.cache_sizes(tmp_path / "missing") == {}


def test_probe_buffers_fit_their_level():
    sizes = roofline.buffer_sizes({"l2": 1 << 20, "l3": 32 << 20}, threads=2)
    assert sizes == {"l2": 1 << 20, "l3": 8 << 20, "memory": 256 << 20}


def test_roofline_fields_of_a_condensed_layer_on_known_numbers():
    # 3072 -> 768 at 90%: k = 307, int16 indices; 1.43 MB > L2 (1 MiB): read from L3
    f = roofline_fields(3072, 768, 1, 0.1, 1e-4, _probe())
    k = 307
    nbytes = 768 * k * (4 + 2) + 768 * 4 + 3072 * 4 + 768 * 4
    flops = 2 * 768 * k
    assert f["macs"] == 768 * k and f["bytes_per_call"] == nbytes == 1433088
    assert f["roofline_level"] == "l3" and f["limit_kind"] == "bandwidth"
    assert f["gflops"] == pytest.approx(flops / 1e-4 / 1e9)
    assert f["intensity_flop_per_byte"] == pytest.approx(flops / nbytes)
    assert f["limit_gflops"] == pytest.approx(flops / nbytes * 30.0)
    assert f["pct_of_limit"] == pytest.approx(100 * f["gflops"] / f["limit_gflops"])


def test_roofline_fields_of_a_large_dense_batch_are_compute_bound():
    f = roofline_fields(768, 768, 256, 1.0, 0.01, _probe())
    nbytes = 768 * 768 * 4 + 768 * 4 + 2 * 256 * 768 * 4  # no indices for a dense weight
    assert f["bytes_per_call"] == nbytes and f["roofline_level"] == "l3"
    assert f["limit_kind"] == "compute" and f["limit_gflops"] == 100.0
    assert f["pct_of_limit"] == pytest.approx(2 * 256 * 768 * 768 / 0.01 / 1e9)
    assert f["macs"] == 256 * 768 * 768
    big = roofline_fields(40000, 4096, 1, 0.5, 1e-3, _probe())
    assert big["roofline_level"] == "memory" and big["bytes_per_call"] > 32 << 20
    assert all(math.isfinite(v) for v in big.values() if isinstance(v, float))


@pytest.mark.parametrize(
    "args,match",
    [
        ((10, 10, 1, 0.0, 1e-3), "density"),
        ((10, 10, 1, 1.5, 1e-3), "density"),
        ((10, 10, 1, 0.5, 0.0), "seconds"),
        ((10, 10, 1, 0.5, float("nan")), "seconds"),
        ((10, -1, 1, 0.5, 1e-3), "sizes"),
    ],
)
def test_roofline_fields_name_a_bad_value(args, match):
    with pytest.raises(ValueError, match=match):
        roofline_fields(*args, _probe())


def test_machine_probe_runs_once_then_reads_its_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    runs = []
    machine = identity()["asv_name"]

    def fake_probe(threads):
        runs.append(threads)
        return _probe(machine=machine, threads=threads)

    monkeypatch.setattr(roofline, "probe_machine", fake_probe)
    first = roofline.machine_probe(threads=2)
    assert roofline.machine_probe(threads=2) == first and runs == [2]
    path = roofline.probe_path(machine, 2)
    assert path.parent == tmp_path / "tuner" and path.is_file()
    roofline.machine_probe(threads=1)  # another thread count: its own file
    assert runs == [2, 1]
    path.write_text("{not json")
    roofline.machine_probe(threads=2)  # a corrupt file is measured again
    roofline.machine_probe(threads=2, force=True)
    assert runs == [2, 1, 2, 2]


def test_python_m_suite_bench_machine_prints_the_cached_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    machine = identity()["asv_name"]
    monkeypatch.setattr(
        roofline, "probe_machine", lambda threads: _probe(machine=machine, threads=threads)
    )
    roofline.machine_probe(threads=3)
    env = {**os.environ, "SRIGL_CACHE_DIR": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "suite.bench", "machine", "--threads", "3", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["fma_gflops"] == 100.0
    res = subprocess.run(
        [sys.executable, "-m", "suite.bench", "machine", "--threads", "3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "FMA peak" in res.stdout and "read memory" in res.stdout


@pytest.mark.slow
def test_real_probe_measures_positive_finite_limits():
    probe = roofline.probe_machine(threads=1, min_seconds=0.01, repeats=2)
    values = [probe.fma_gflops, *probe.bandwidth_gbs.values()]
    assert all(math.isfinite(v) and v > 0.1 for v in values), probe
    assert probe.threads == 1 and set(probe.bandwidth_gbs) == {"l2", "l3", "memory"}
