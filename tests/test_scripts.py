"""The measurement scripts run (on a tiny grid): a renamed library function must not leave them
broken until someone measures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_measure_fused_prints_its_table_on_a_tiny_grid():
    from backends.kernels import ops

    out = _run("scripts/measure_fused.py", "--threads", "1", "--shapes", "64x48",
               "--sparsities", "0.9", "--batches", "1,17", "--min-run-time", "0.01",
               "--all-variants", "--force-tune")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| 64->48 |")]
    assert len(rows) == 2 and "fused x dense" in out
    if ops.available()[0]:  # the tuner's own times per candidate, from this machine's cache
        tuned = [line for line in out.splitlines() if "| tuner (batch " in line]
        assert len(tuned) == 2 and all("/rows/ser'" in line for line in tuned), tuned


def test_measure_fused_per_core_times_every_serial_variant():
    from backends.kernels import ops

    if not ops.available()[0]:
        pytest.skip(f"needs the C++ fused kernel: {ops.available()[1]}")
    out = _run("scripts/measure_fused.py", "--per-core", "--shapes", "64x48",
               "--sparsities", "0.9", "--batches", "1,17", "--calls", "2")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| 64->48 |")]
    assert len(rows) == 2 and all("/ser" in row for row in rows)


@pytest.mark.slow
def test_measure_whole_model_prints_its_table_for_one_pair():
    out = _run("scripts/measure_whole_model.py", "--threads", "1", "--experiments",
               "cifar10_wrn22", "--backends", "fused", "--batches", "1",
               "--min-run-time", "0.05", "--pairs", "2", "--per-layer")  # fmt: skip
    assert re.search(r"^\| cifar10_wrn22 \|[^\n]*\| 1 +\| fused +\|", out, re.M), out
    assert "per conv, fused vs BN-folded dense" in out and "| blocks.0.conv1 |" in out
