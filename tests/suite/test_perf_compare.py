"""suite.perf_compare: the instruction-count gate of ``make perf-compare BASE=``.

The end-to-end test builds a tiny git repository (one module, a loop) with one commit that adds
10% work to every call and one no-op commit, and counts that call through a ``probe/`` case
(three valgrind runs of a torch-free Python: seconds each)."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import pytest

from suite import perf_compare as pc

BASE = {"counts": {"a": 1000, "b": 2000, "gone": 5}, "skipped": {"x": "no GPU"}}
HEAD = {"counts": {"a": 1049, "b": 2101, "new": 7}, "skipped": {"x": "no GPU"}}


def test_rows_hold_both_counts_and_the_change():
    rows = {r.case: r for r in pc.compare(BASE, HEAD)}
    assert set(rows) == {"a", "b", "new", "gone", "x"}
    assert rows["a"].change_pct == pytest.approx(4.9)
    assert rows["b"].change_pct == pytest.approx(5.05)
    assert rows["new"].base is None and rows["new"].change_pct is None
    assert rows["gone"].head is None and rows["x"].base is None is rows["x"].head


@pytest.mark.parametrize("threshold,flagged", [(5.0, {"b"}), (5.1, set()), (4.0, {"a", "b"})])
def test_a_count_is_a_regression_only_above_the_threshold(threshold, flagged):
    rows = pc.compare(BASE, HEAD)
    assert {r.case for r in rows if r.regressed(threshold)} == flagged


def test_the_table_prints_base_head_change_and_says_na_without_wall_intervals():
    table = pc.format_table(pc.compare(BASE, HEAD), 5.0)
    lines = table.splitlines()
    assert lines[0].startswith("| case | base | head | change % | wall ratio base")
    row_b = next(line for line in lines if line.startswith("| b |"))
    assert "2,000" in row_b and "2,101" in row_b and "+5.05" in row_b
    assert "REGRESSION (> 5%)" in row_b and row_b.count("n/a") == 2
    assert "REGRESSION" not in next(line for line in lines if line.startswith("| a |"))


def test_wall_time_is_flagged_only_where_the_intervals_separate():
    assert pc.intervals_separate((1.0, 0.9, 1.1), (1.3, 1.15, 1.4))
    assert not pc.intervals_separate((1.0, 0.9, 1.2), (1.3, 1.15, 1.4))
    assert not pc.intervals_separate(None, (1.3, 1.15, 1.4))
    base = {**BASE, "wall": {"a": [0.5, 0.45, 0.55]}}
    head = {**HEAD, "wall": {"a": [0.7, 0.65, 0.75], "b": [1.0, 0.9, 1.1]}}
    table = pc.format_table(pc.compare(base, head), 5.0)
    row_a = next(line for line in table.splitlines() if line.startswith("| a |"))
    assert "0.500 [0.450, 0.550]" in row_a and "wall changed" in row_a
    row_b = next(line for line in table.splitlines() if line.startswith("| b |"))
    assert "wall changed" not in row_b and "1.000 [0.900, 1.100]" in row_b


def test_bad_threshold_cases_and_revisions_are_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="-1"):
        pc.run(tmp_path, "HEAD", threshold=-1)
    with pytest.raises(ValueError, match=r"'\('"):
        pc.run(tmp_path, "HEAD", cases="(")
    with pytest.raises(pc.CompareError, match="'zzz' selects no case"):
        pc.run(tmp_path, "HEAD", cases="zzz")
    _git(tmp_path, "init", "-q")
    with pytest.raises(pc.CompareError, match="no-such-rev"):
        pc.count_revision(tmp_path, "no-such-rev", ["smoke"])
    assert pc.main(["--base", "no-such-rev", "--repo", str(tmp_path)]) == 2


# --------------------------------------------------------------------------- a tiny repository

TINY_WORK = """
def run():
    total = 0
    for i in range(N):  # WORK
        total += i * i
    return total
"""


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def _commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        path = repo / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", message)
    return _git(repo, "rev-parse", "HEAD")


@pytest.fixture
def tiny_repo(tmp_path, monkeypatch):
    """base -> work (10% more loop iterations per call) -> noop (a comment changes); the
    counted code imports no torch, so each valgrind run takes seconds."""
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path / "cache"))
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    shas = {"base": _commit(repo, {"tinywork.py": "N = 2000\n" + TINY_WORK}, "base")}
    shas["work"] = _commit(repo, {"tinywork.py": "N = 2200\n" + TINY_WORK}, "10% more work")
    noop = "N = 2200\n" + TINY_WORK.replace("# WORK", "# the same work, another comment")
    shas["noop"] = _commit(repo, {"tinywork.py": noop}, "a comment")
    return repo, shas


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_perf_compare_flags_added_work_and_passes_a_noop_commit(tiny_repo, capsys):
    repo, shas = tiny_repo
    args = ["--repo", str(repo), "--case", "probe/tinywork:run"]
    assert pc.main([*args, "--base", shas["base"], "--head", shas["work"]]) == 1
    flagged = capsys.readouterr().out
    assert "| probe/tinywork:run |" in flagged and "REGRESSION (> 5%)" in flagged
    assert pc.main([*args, "--base", shas["work"], "--head", shas["noop"]]) == 0
    passed = capsys.readouterr().out
    assert "no count grew by more than 5%" in passed and "REGRESSION" not in passed
    assert "+0.00" in passed  # a deterministic count: the no-op commit counts the same
    assert not _git(repo, "worktree", "list").count("\n")  # the temporary worktrees are gone


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # two valgrind runs of the real workload
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_the_same_commit_counted_twice_gives_the_same_counts():
    status, text = pc.run(
        ROOT, "HEAD", "HEAD", cases=r"^fused/fc2/0\.99/b1$|^step/srigl$", use_cache=False
    )  # no cached counts: both sides run (the kernel build cache is kept)
    assert status == 0, text
    rows = [line for line in text.splitlines() if line.startswith(("| fused/", "| step/"))]
    assert len(rows) == 2 and all("| +0.00 |" in row for row in rows), text


def test_wall_ratios_time_layer_cases_with_the_paired_protocol_and_skip_the_rest():
    """Structure only (no speed is asserted): a layer case gets a speed-up inside its 95%
    interval from the paired timer; a training step is no layer call and gets nothing."""
    from suite.asv_benchmarks import instruction_counts as ic

    out = ic.wall_ratios(["backend/dense/fc1/0.9/b1", "step/dense"], pairs=3, block_seconds=0.002)
    speedup, low, high = out["wall"]["backend/dense/fc1/0.9/b1"]
    assert 0 < low <= speedup <= high
    assert "step/dense" not in out["wall"] and not out["wall_skipped"]


def test_no_layer_case_means_no_wall_timing_run(tmp_path):
    assert pc.wall_revision(tmp_path, "HEAD", ["step/dense", "probe/x:y"]) == {
        "wall": {},
        "wall_skipped": {},
    }
