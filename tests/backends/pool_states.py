"""Driving a kernel extension's SRIGL_PARALLEL=auto state through its test hooks
(``backends/kernels/csrc/work_pool.h``): onto the pool after a late team job, then to serial
jobs after a late pool job. ``o`` is the extension's operators (``ops.load()``); torch must
have 2 threads."""

from __future__ import annotations

import time
from collections.abc import Callable

WARMUP_JOBS = 20  # past the team jobs auto never counts late (libgomp starting its threads)


def auto_onto_pool(o, job: Callable[[], object] | None = None) -> None:
    """Auto mode afresh, past its warm-up, then one team job whose other thread comes 20 ms
    late: the next second's jobs run on the pool. ``job``: a parallel job (default: 4 empty
    test chunks)."""
    job = job or (lambda: o.pool_test_chunks(4, -1, 0))
    o.pool_set_mode(2)
    for _ in range(WARMUP_JOBS):
        job()
    old = o.pool_set_helper_delay(20000)
    try:
        job()
    finally:
        o.pool_set_helper_delay(old)


def start_pool_helper(o) -> None:
    """One pool job (starts the helper, if none yet), then 0.1 s: torch's OpenMP workers spin
    for a while after team jobs and keep the pool's helper off the cores (seen: 30 ms); it must
    get one to claim a chunk of the next job."""
    o.pool_test_chunks(4, -1, 0)
    time.sleep(0.1)


def late_pool_job(o) -> int:
    """A pool job of 16 chunks of 2 ms whose helper sits 100 ms in the chunk it claimed (as
    when the OS deschedules it there): in auto mode, serial jobs next. Returns the chunks run."""
    old = o.pool_set_helper_chunk_delay(100_000)
    try:
        return int(o.pool_test_chunks(16, -1, 2000))
    finally:
        o.pool_set_helper_chunk_delay(old)
