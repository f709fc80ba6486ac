"""suite.bench.under_load: fused's loaded time paired with its quiet time in one run, the busy
processes switched on and off between blocks."""

from __future__ import annotations

import json
import math
import pathlib
import time

import pytest

from suite.bench import under_load as ul
from suite.bench.load import cpu_load


def _settles(pid: int, states: str, seconds: float = 5.0) -> str:
    """The process state once it is one of ``states`` (signals arrive asynchronously), or the
    last state seen after ``seconds``."""
    deadline = time.monotonic() + seconds
    while (state := ul.process_state(pid) or "?") not in states and time.monotonic() < deadline:
        time.sleep(0.01)
    return state


@pytest.mark.parametrize(
    "low, high, want", [(1.1, 1.4, "met"), (1.6, 1.9, "missed"), (1.3, 1.7, "undecided")]
)
def test_verdict_against_the_target_reads_the_interval(low, high, want):
    assert ul.verdict_within(low, high, 1.5) == want


def test_targets_are_1_5_at_batch_1_and_2_above():
    assert ul.target_for(1) == 1.5 and ul.target_for(7) == 2.0 and ul.target_for(256) == 2.0


@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_switch_pauses_and_resumes_the_busy_processes():
    with cpu_load(1) as procs:
        switch = ul.LoadSwitch(procs)  # starts paused
        pid = procs[0].pid
        assert _settles(pid, "T") == "T", "a paused busy process is not stopped"
        switch.set(True)
        assert _settles(pid, "RS") in "RS", "a resumed busy process is still stopped"
        switch.set(False)
        assert _settles(pid, "T") == "T"
    assert procs[0].poll() is not None, "the busy process outlived the block (it was paused)"


def test_measure_cell_pairs_quiet_and_loaded_blocks_on_a_small_layer():
    with cpu_load(1) as procs:
        switch = ul.LoadSwitch(procs)
        row = ul.measure_cell(
            64, 32, 0.75, 8, switch, threads=2, pairs=3, block_seconds=0.002, settle_seconds=0.001
        )
        assert not switch.on, "the load was left running after the cell"
    assert row["k"] == 16 and row["n_pairs"] == 3 and row["target"] == 2.0
    for key in ul.KEYS:
        assert len(row["samples_s"][key]) == 3 and row[f"{key}_median_s"] > 0
    for name in ("slowdown", "dense_slowdown", "speedup_vs_dense_loaded", "aa"):
        assert row[f"{name}_ci_low"] <= row[name] <= row[f"{name}_ci_high"]
        assert math.isfinite(row[name]) and row[name] > 0
    assert row["verdict"] in ("met", "missed", "undecided")
    assert row["faster_than_dense"] in ("yes", "no", "undecided")
    assert set(row["loaded_jobs"]) == {"team", "pool", "serial"}


def test_measure_cell_refuses_bad_timing_settings_before_any_call():
    with pytest.raises(ValueError, match="pairs=1"):
        ul.measure_cell(64, 32, 0.75, 1, None, threads=1, pairs=1)
    with pytest.raises(ValueError, match="settle_seconds=-1"):
        ul.measure_cell(64, 32, 0.75, 1, None, threads=1, settle_seconds=-1)


@pytest.mark.parametrize(
    "args, word",
    [
        (["--batches", "0"], "batches >= 1"),
        (["--sparsities", "1.5"], "sparsities in"),
        (["--load", "0"], "--load >= 1"),
        (["--sparsities", "a"], "comma-separated"),
    ],
)
def test_cli_refuses_bad_values_in_one_line(args, word, capsys):
    with pytest.raises(SystemExit) as exc:
        ul.cli(args)
    assert word in capsys.readouterr().err + str(exc.value.code)


def test_cli_writes_one_record_with_the_machine_and_prints_the_table(tmp_path, capsys):
    rc = ul.cli(
        [
            "--shapes",
            "64x32",
            "--sparsities",
            "0.75",
            "--batches",
            "1",
            "--pairs",
            "2",
            "--block-seconds",
            "0.002",
            "--settle-seconds",
            "0.001",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    files = list(tmp_path.glob("load-*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["kind"] == "under_load" and record["host"]["asv_name"]
    assert record["config"]["load"] == 1 and len(record["rows"]) == 1
    assert "| 64->32 | 75% | 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("factor, verdict", [(1.2, "met"), (2.0, "missed")])
def test_ratio_fields_are_the_paired_ratios_of_the_blocks(factor, verdict):
    quiet = [1e-5 * (1 + 0.01 * i) for i in range(6)]
    samples = {
        "fused_quiet": quiet,
        "fused_loaded": [t * factor for t in quiet],
        "fused_quiet_aa": list(quiet),
        "dense_quiet": [t * 5 for t in quiet],
        "dense_loaded": [t * 5 for t in quiet],
    }
    row = ul.ratio_fields(samples, batch=1)
    assert row["slowdown"] == pytest.approx(factor) and row["aa"] == pytest.approx(1.0)
    assert row["dense_slowdown"] == pytest.approx(1.0)
    assert row["speedup_vs_dense_loaded"] == pytest.approx(5 / factor)
    assert row["verdict"] == verdict and row["faster_than_dense"] == "yes"
    assert row["fused_quiet_median_s"] == pytest.approx(sum(quiet[2:4]) / 2)
