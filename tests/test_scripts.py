"""The measurement scripts run (on a tiny grid): a renamed library function must not leave them
broken until someone measures."""

from __future__ import annotations

import os
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
    out = _run("scripts/measure_fused.py", "--threads", "1", "--shapes", "64x48",
               "--sparsities", "0.9", "--batches", "1,17", "--min-run-time", "0.01",
               "--all-variants")  # fmt: skip
    rows = [line for line in out.splitlines() if line.startswith("| 64->48 |")]
    assert len(rows) == 2 and "fused x dense" in out


@pytest.mark.slow
def test_measure_whole_model_prints_its_table_for_one_pair():
    out = _run("scripts/measure_whole_model.py", "--threads", "1", "--experiments",
               "cifar10_wrn22", "--backends", "fused", "--batches", "1",
               "--min-run-time", "0.05", "--rounds", "1")  # fmt: skip
    assert "| cifar10_wrn22 | fused | 1 |" in out
