"""The kernels' work-claiming pool (backends/kernels/csrc/work_pool.h): the parallel variants of
the fused and dense kernels give the serial results bit for bit with 1 and 2 threads, from
several Python threads at once, in a forked child, and when the helper thread never comes; a
chunk that throws raises on the caller and leaves the pool usable; a helper thread that cannot
start makes the job serial."""

from __future__ import annotations

import os
import threading
import time
import warnings

import pytest
import torch
from backend_cases import Case, constant_fan_in_layer
from pool_states import auto_onto_pool, late_pool_job, start_pool_helper

from backends import dense_kernel
from backends.condensed import condense_layer
from backends.kernels import ops

OK, WHY = ops.available()
pytestmark = pytest.mark.skipif(not OK, reason=f"C++ fused kernel unavailable: {WHY}")

CASE = Case("pool", 301, 203, 29, 190, ())
BATCHES = [0, 1, 7, 256]


@pytest.fixture(autouse=True)
def pool_mode():
    """These tests are about the pool: SRIGL_PARALLEL=pool for their duration (auto, the
    default, would run a quiet machine's jobs on an OpenMP team)."""
    o = ops.load()
    before = o.pool_set_mode(0)
    yield
    o.pool_set_mode(before)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def _layer():
    weight, mask, bias = constant_fan_in_layer(CASE, 5)
    parts = condense_layer(weight, mask, bias)
    o = ops.load()
    geo = ops.perm_geometries(int(o.fused_isa()))[:1] or [(5, 7)]
    blobs = [
        o.fused_pack(parts["values"], parts["indices"], parts["active"], parts["bias"], 301, *g)
        for g in [(0, 0), *geo]
    ]
    return weight * mask, bias, blobs


def _parallel_codes(blob) -> list[int]:
    """Every parallel fused variant of the best ISA level that runs on this pack."""
    o = ops.load()
    isa = int(o.fused_isa())
    codes = [isa * 1000 + f * 100 + w * 10 + 1 for f in range(5) for w in (0, 1)]
    return [
        c
        for c in codes
        if (c // 100 % 10 in (2, 3) or c // 10 % 10 == 0) and o.fused_runs_here(blob, c)
    ]


def _calls(xs, transposed: bool = True) -> list:
    """Zero-argument calls of every parallel fused variant (plain and, if ``transposed``,
    transposed input), the fused backward and the parallel dense variants on each input: only
    this project's operators run in them (torch's own OpenMP regions hang in a forked child)."""
    o = ops.load()
    weight, bias, blobs = _layer()
    calls = []
    for x in xs:
        xt = x.T.contiguous()
        grad = torch.linspace(-1, 1, x.shape[0] * CASE.out_features)
        grad = grad.reshape(x.shape[0], CASE.out_features)
        for blob in blobs:
            for code in _parallel_codes(blob):
                calls.append(
                    lambda x=x, b=blob, c=code: o.fused_linear_variant(
                        x, b, c, CASE.out_features, False
                    )
                )
                if transposed:
                    calls.append(
                        lambda x=xt, b=blob, c=code: o.fused_linear_variant(
                            x, b, c, CASE.out_features, True
                        )
                    )
            calls.append(
                lambda g=grad, b=blob: o.fused_linear_backward(g, b, CASE.in_features, False)
            )
    ok, _ = dense_kernel.EXTENSION.available()
    if ok:
        d = dense_kernel.load()
        pack, isa = d.dense_pack(weight, bias), int(d.dense_isa())
        for x in xs:
            for f in range(3):
                calls.append(
                    lambda x=x, c=isa * 1000 + f * 100 + 1: d.dense_linear_variant(
                        x, pack, CASE.out_features, c
                    )
                )
    return calls


def _all_results(xs, transposed: bool = True) -> list[torch.Tensor]:
    return [call() for call in _calls(xs, transposed)]


def _inputs():
    g = torch.Generator().manual_seed(3)
    return [torch.randn(b, CASE.in_features, generator=g) for b in BATCHES]


def _same(a: list[torch.Tensor], b: list[torch.Tensor], what: str) -> None:
    assert len(a) == len(b), what
    for i, (u, v) in enumerate(zip(a, b)):
        assert torch.equal(u, v), f"{what}: result {i} differs"


def test_parallel_variants_give_the_same_bits_with_one_and_two_threads(two_threads):
    xs = _inputs()
    o = ops.load()
    jobs_before = o.pool_stats()[1]
    two = _all_results(xs)
    assert o.pool_stats()[1] > jobs_before, "two threads: the pool ran no parallel job"
    torch.set_num_threads(1)
    one = _all_results(xs)
    torch.set_num_threads(2)  # the pool grows its helper back
    again = _all_results(xs)
    _same(two, one, "2 threads vs 1")
    _same(again, one, "2 threads after 1 vs 1")


def test_concurrent_calls_from_four_python_threads_are_correct(two_threads):
    xs = _inputs()
    want = _all_results(xs)
    errors: list[str] = []

    def worker(tid: int) -> None:
        try:
            torch.set_num_threads(2)
            for rep in range(5):
                _same(_all_results(xs), want, f"thread {tid} rep {rep}")
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(repr(err))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


@pytest.mark.parametrize("mode", [0, 1, 2], ids=["pool", "team", "auto"])
def test_a_forked_child_runs_the_parallel_kernels_correctly(two_threads, mode):
    """Whatever ran in the parent (the pool, or the OpenMP team whose threads a forked child
    lacks: a region there would wait at its barrier forever), the child runs on a fresh pool."""
    ops.load().pool_set_mode(mode)
    xs = _inputs()
    calls = _calls(xs, transposed=False)  # transposed rows inputs copy with torch's OpenMP
    want = [call().numpy().tobytes() for call in calls]  # the parent's pool has its helper
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads running
        pid = os.fork()
    if pid == 0:  # the child: exit code 0 only if every result matches
        code = 1
        try:
            got = [call().numpy().tobytes() for call in calls]
            code = 0 if got == want else 2
            code = code if ops.load().pool_stats()[1] > 0 else 3  # the child's own pool ran
        finally:
            os._exit(code)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung (an OpenMP team without its threads?)")
    assert os.waitstatus_to_exitcode(done[1]) == 0


def test_the_caller_finishes_alone_when_the_helper_never_comes(two_threads):
    o = ops.load()
    xs = _inputs()
    want = _all_results(xs)
    o.pool_set_helper_delay(2_000_000)  # helpers sleep 2 s after waking, then find no chunk
    try:
        before = o.pool_stats()
        got = _all_results(xs)
        after = o.pool_stats()
    finally:
        o.pool_set_helper_delay(0)
    _same(got, want, "helper delayed")
    assert after[1] > before[1], "no parallel job ran"
    assert after[3] == before[3], "a delayed helper claimed a chunk"
    _same(_all_results(xs), want, "after the late helper woke")


def _runs_in_parallel() -> None:
    """Pool jobs of 16 chunks of 2 ms each run in parallel (not serially: the pool is free), and
    within 5 s a helper claims chunks again (one still sleeping off an earlier test's
    pool_set_helper_delay comes back)."""
    o = ops.load()
    deadline = time.monotonic() + 5.0
    while True:
        before = o.pool_stats()
        assert o.pool_test_chunks(16, -1, 2000) == 16
        after = o.pool_stats()
        assert after[1] == before[1] + 1, "the job after the exception did not run in parallel"
        assert after[2] == before[2], "the job after the exception ran serially (pool held)"
        if after[3] > before[3]:
            return
        assert time.monotonic() < deadline, "no helper ran a chunk within 5 s"


def test_a_chunk_that_throws_on_the_caller_raises_and_the_pool_stays_parallel(two_threads):
    o = ops.load()
    xs = _inputs()
    want = _all_results(xs)
    o.pool_set_helper_delay(200_000)  # the caller runs every chunk, chunk 3 among them
    try:
        with pytest.raises(RuntimeError, match="chunk 3 failed on the caller"):
            o.pool_test_chunks(8, 3, 0)
    finally:
        o.pool_set_helper_delay(0)
    time.sleep(0.3)  # the delayed helper wakes, finds no chunk and waits for the next job
    _runs_in_parallel()
    with pytest.raises(RuntimeError, match="chunk 5 failed"):  # on whichever thread ran it
        o.pool_test_chunks(8, 5, 0)
    _runs_in_parallel()
    _same(_all_results(xs), want, "after an exception in a chunk")


def test_a_chunk_that_throws_on_a_helper_raises_on_the_caller(two_threads):
    o = ops.load()
    for _ in range(10):  # every helper chunk throws; a try where no helper came raises nothing
        try:
            o.pool_test_chunks(16, -2, 2000)
        except RuntimeError as err:
            assert "failed on the helper" in str(err)
            break
    else:
        pytest.fail("no helper ran a chunk in 10 jobs of 16 chunks of 2 ms")
    _runs_in_parallel()


def test_a_helper_thread_that_cannot_start_makes_the_job_serial(two_threads):
    o = ops.load()
    assert o.pool_test_chunks(4, -1, 0) == 4  # one helper
    o.pool_test_fail_next_spawn(True)
    torch.set_num_threads(3)  # the pool joins its helper, then cannot start two
    before = o.pool_stats()
    assert o.pool_test_chunks(8, -1, 0) == 8
    after = o.pool_stats()
    assert not o.pool_test_fail_next_spawn(False), "the spawn failure hook was not used"
    assert (after[0], after[1], after[2]) == (0, before[1], before[2] + 1), (before, after)
    assert o.pool_test_chunks(8, -1, 0) == 8  # the next job starts both helpers
    again = o.pool_stats()
    assert (again[0], again[1]) == (2, after[1] + 1), (after, again)


_TEAM_SCRIPT = """
import sys, torch
sys.path[:0] = [{here!r}]
import test_kernels_work_pool as t
from backends.kernels import ops
o = ops.load()
torch.set_num_threads(2)
xs = t._inputs()
two = t._all_results(xs)
assert o.pool_stats()[1] == 0, "team mode: a job ran on the pool"
torch.set_num_threads(1)
one = t._all_results(xs)
t._same(two, one, "team, 2 threads vs 1")
torch.set_num_threads(2)
try:
    o.pool_test_chunks(8, 5, 0)
except RuntimeError as err:
    assert "chunk 5 failed" in str(err), err
else:
    raise AssertionError("a chunk that throws in a team raised nothing")
t._same(t._all_results(xs), two, "team, after an exception in a chunk")
print("team ok")
"""


def test_team_mode_runs_the_chunks_on_an_openmp_team_with_the_same_bits():
    """SRIGL_PARALLEL=team (read once per process, hence a child process): the same chunks on
    torch's OpenMP team, no pool job, bits equal to one thread, an exception still raised."""
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, SRIGL_PARALLEL="team")
    out = subprocess.run(
        [sys.executable, "-c", _TEAM_SCRIPT.format(here=here)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0 and "team ok" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("threads", [2, 3, 12])
def test_team_jobs_run_every_chunk_once_from_home_ranges_and_by_stealing(threads):
    """On the OpenMP team each thread claims its home range of the chunks first, then the other
    threads' ranges: every chunk runs exactly once, with teams of 2, 3 and 12 threads (more
    ranges than are kept on the stack), with more or fewer chunks than threads, and when every
    thread but the caller comes late (the caller then runs them all); the fused variants give
    the same bits as one thread."""
    o = ops.load()
    xs = _inputs()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    one = _all_results(xs)
    o.pool_set_mode(1)
    torch.set_num_threads(threads)
    try:
        for nchunks in (1, 2, 5, 13, 48, 100):
            assert o.pool_test_chunks(nchunks, -1, 0) == nchunks, nchunks
        # the other threads sleep 20 ms after waking and any chunk they run throws: the caller
        # must have taken every range by then
        old = o.pool_set_helper_delay(20000)
        try:
            assert o.pool_test_chunks(2 * threads, -2, 0) == 2 * threads
        finally:
            o.pool_set_helper_delay(old)
        _same(_all_results(xs), one, f"team of {threads}")
    finally:
        torch.set_num_threads(before)


_FIRST_JOBS_SCRIPT = """
import torch
from backends.kernels import ops
o = ops.load()
torch.set_num_threads(2)
o.pool_test_chunks(4, -1, 0)  # the process's first team of 2: starts libgomp's thread
first = o.pool_stats()
o.pool_set_helper_delay(20000)  # the second job's other thread comes 20 ms late
o.pool_test_chunks(4, -1, 0)
second = o.pool_stats()
print("late", first[5], second[5])
"""


def test_auto_mode_counts_a_late_team_from_the_second_job_of_a_process():
    """Only a team job larger than any before it (libgomp starting threads) is exempt: a process
    that starts on a loaded machine leaves the team after its first jobs, not after 16 of them
    (each waiting a time slice). A fresh process, hence a child."""
    import subprocess
    import sys

    env = dict(os.environ, SRIGL_PARALLEL="auto")
    out = subprocess.run(
        [sys.executable, "-c", _FIRST_JOBS_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "late 0 1" in out.stdout, out.stdout


def test_auto_mode_leaves_the_team_when_its_caller_loses_the_core_inside_its_chunks(two_threads):
    """Team jobs whose caller spends milliseconds inside its own chunks without the CPU (here:
    every chunk sleeps 3 ms, the helper's too, so nobody waits for anybody at the end): from the
    second slow job on auto mode reads the caller's CPU time, counts the lost time late and moves
    to the pool within a few jobs."""
    o = ops.load()
    o.pool_set_mode(2)
    time.sleep(0.1)  # team threads a previous test delayed finish their sleep
    for _ in range(3):
        o.pool_test_chunks(4, -1, 0)  # warm: the team of 2 has run
    o.pool_set_mode(2)  # afresh: on the team, no late wait counted
    before = o.pool_stats()
    for _ in range(6):
        assert o.pool_test_chunks(4, -1, 3000) == 4
    after = o.pool_stats()
    assert after[4] > before[4], "no team job ran"
    # each job loses ~6 ms of the caller's wall time: one or two of them trip the 10 ms budget
    assert after[5] - before[5] >= 1, "no late team job counted"
    assert after[1] > before[1], "auto mode stayed on the team"


def test_auto_mode_runs_on_the_team_and_falls_back_to_the_pool_after_a_late_team(two_threads):
    """SRIGL_PARALLEL=auto: a quiet job runs on torch's OpenMP team (same bits as one thread);
    a team job whose other thread comes 0.3 ms late is counted late but keeps the team (late
    waits stay under 10 ms within 100 ms); one whose other thread comes 20 ms late moves the
    next jobs to the pool (for a second)."""
    o = ops.load()
    dense, bias, blobs = _layer()
    x = torch.randn(256, 301, generator=torch.Generator().manual_seed(3))
    code = _parallel_codes(blobs[0])[0]
    torch.set_num_threads(1)
    one = o.fused_linear_variant(x, blobs[0], code, 203, False)
    torch.set_num_threads(2)
    assert o.pool_set_mode(2) == 0
    for _ in range(20):  # past the warm-up jobs (libgomp starting its threads is not "late")
        o.fused_linear_variant(x, blobs[0], code, 203, False)
    before = o.pool_stats()
    got = o.fused_linear_variant(x, blobs[0], code, 203, False)
    mid = o.pool_stats()
    assert torch.equal(got, one)
    assert mid[4] > before[4], "auto mode, quiet: no team job ran"
    old_delay = o.pool_set_helper_delay(300)
    try:
        hiccup = o.fused_linear_variant(x, blobs[0], code, 203, False)
        small = o.pool_stats()
        o.pool_set_helper_delay(20000)
        late = o.fused_linear_variant(x, blobs[0], code, 203, False)
        after_late = o.pool_stats()
        again = o.fused_linear_variant(x, blobs[0], code, 203, False)
        after = o.pool_stats()
    finally:
        o.pool_set_helper_delay(old_delay)
    assert torch.equal(hiccup, one) and torch.equal(late, one) and torch.equal(again, one)
    assert small[4] == mid[4] + 1 and small[1] == mid[1], "a 0.3 ms hiccup left the team"
    assert after_late[5] >= mid[5] + 1, "a team thread 20 ms late was not counted late"
    assert after[1] == after_late[1] + 1, "after a 20 ms late team job the next ran off the pool"
    assert after[4] == after_late[4]


def test_auto_mode_runs_serially_after_a_pool_job_waits_for_a_descheduled_helper(two_threads):
    """SRIGL_PARALLEL=auto under load: after a late team job the pool runs the jobs; when a pool
    job's caller then waits 100 ms for a chunk that the helper claimed and sat in (as when the OS
    deschedules it there), the next jobs run serially on the caller (same bits), and setting
    the mode again starts on the team."""
    o = ops.load()
    _, _, blobs = _layer()
    x = torch.randn(256, 301, generator=torch.Generator().manual_seed(3))
    code = _parallel_codes(blobs[0])[0]
    torch.set_num_threads(1)
    one = o.fused_linear_variant(x, blobs[0], code, 203, False)
    torch.set_num_threads(2)
    auto_onto_pool(o, lambda: o.fused_linear_variant(x, blobs[0], code, 203, False))
    start_pool_helper(o)
    before = o.pool_stats()
    assert late_pool_job(o) == 16
    late = o.pool_stats()
    got = o.fused_linear_variant(x, blobs[0], code, 203, False)
    after = o.pool_stats()
    assert late[1] == before[1] + 1, "after a late team job the jobs did not use the pool"
    assert late[6] == before[6] + 1, "a pool job that waited 100 ms for a helper was not late"
    assert torch.equal(got, one)
    assert after[7] == late[7] + 1, "after a late pool job the next job did not run serially"
    assert after[1] == late[1] and after[4] == late[4], "the serial job used the pool or team"
    o.pool_set_mode(2)
    o.fused_linear_variant(x, blobs[0], code, 203, False)
    fresh = o.pool_stats()
    assert fresh[4] == after[4] + 1 and fresh[7] == after[7], "setting auto again left serial"
