"""suite.asv_summary: asv's result files -> results/ASV.md (benchmark x commit) and a PNG."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from repo_fixtures import first_parent_shas

from suite import asv_summary

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = ["result", "params", "version", "started_at", "duration"]  # asv's, shortened
MACHINE = "amd-f25m17-avx512-2c"
DIGITS = "bench_training.DigitsAccuracy.track_top1_error"
STEP = "bench_training.TrainingStep.time_step"


def _write_result(
    results: Path, commit: str, date: int, values: dict, machine: str = MACHINE
) -> None:
    """One asv result file (results format version 2) of ``commit`` for ``machine``."""
    entries = {bench: [vals, params, "1", date, 1.0] for bench, (vals, params) in values.items()}
    data = {
        "commit_hash": commit,
        "env_name": "virtualenv-py3.11-torch2.14.1",
        "date": date,
        "params": {"machine": machine, "python": "3.11"},
        "python": "3.11",
        "requirements": {"torch": "2.14.1"},
        "result_columns": COLUMNS,
        "results": entries,
        "version": 2,
    }
    folder = results / machine
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{commit[:8]}-{data['env_name']}.json").write_text(json.dumps(data))
    info = {"machine": machine, "cpu": "AMD EPYC (family 25 model 17)", "num_cpu": "2"}
    (folder / "machine.json").write_text(json.dumps(info))


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two commits: digits error for (srigl|rigl|dense|set) x 0.9, a step time; the newer
    commit has dense failed and the step benchmark failed as a whole."""
    folder = tmp_path / "asv"
    params = [["'srigl'", "'rigl'", "'dense'", "'set'"], ["0.9"]]
    _write_result(
        folder, "a" * 40, 1000, {DIGITS: ([5.0, 6.0, 3.0, None], params), STEP: ([0.002], [])}
    )
    _write_result(
        folder, "b" * 40, 2000, {DIGITS: ([4.0, 5.5, None, None], params), STEP: (None, [])}
    )
    units = {DIGITS: {"unit": "%"}, STEP: {"unit": "seconds"}, "version": 2}
    (folder / "benchmarks.json").write_text(json.dumps(units))
    return folder


@pytest.mark.parametrize(
    "value,unit,text",
    [
        (0.000123, "seconds", "123 us"),
        (0.0042, "seconds", "4.2 ms"),
        (1.5, "seconds", "1.5 s"),
        (3e-9, "seconds", "3 ns"),
        (3 * 2**20, "bytes", "3 MiB"),
        (4.25, "%", "4.25%"),
        (0.431, "ratio", "0.431"),
        (27860960.0, "instructions", "27,860,960"),
        (math.nan, "ratio", "n/a"),
    ],
)
def test_values_are_formatted_by_unit(value, unit, text):
    assert asv_summary.format_value(value, unit) == text


def test_result_files_become_one_row_per_parameter_set_and_commit(results):
    df = asv_summary.load_results(results, MACHINE)
    assert len(df) == 2 * (4 + 1)
    row = df[(df["commit"] == "a" * 40) & (df["params"] == "rigl, 0.9")].iloc[0]
    assert (row["benchmark"], row["value"], row["unit"]) == (DIGITS, 6.0, "%")
    failed = df[(df["commit"] == "b" * 40) & (df["benchmark"] == STEP)]
    assert failed["params"].tolist() == [""] and failed["value"].isna().all()


def test_summary_writes_a_benchmark_by_commit_table_and_a_png(results, tmp_path):
    md, figures = tmp_path / "ASV.md", tmp_path / "fig"
    asv_summary.write_summary(results, md, figures)
    lines = md.read_text().splitlines()
    png = figures / f"asv_history_{MACHINE}.png"
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
        for line in lines
        if line.startswith("| ")
    }
    assert list(rows)[0] == "benchmark (params)" and rows["benchmark (params)"] == [
        "aaaaaaaa",
        "bbbbbbbb",
    ]
    assert rows["training.DigitsAccuracy.track_top1_error (srigl, 0.9)"] == ["5.00%", "4.00%"]
    assert rows["training.DigitsAccuracy.track_top1_error (dense, 0.9)"] == ["3.00%", "n/a"]
    assert rows["training.TrainingStep.time_step"] == ["2 ms", "n/a"]
    assert not any("set, 0.9" in r for r in rows)  # never measured: left out, and counted
    legend = next(line for line in lines if "commits recorded" in line)
    assert "2 commits recorded" in legend and "1 parameter sets without any value" in legend
    assert f"## Machine `{MACHINE}`: AMD EPYC (family 25 model 17), 2 CPUs" in lines
    assert png.stat().st_size > 10_000


def test_the_newest_commits_are_shown_oldest_left(results, tmp_path):
    _write_result(results, "c" * 40, 3000, {STEP: ([0.001], [])})
    md = tmp_path / "ASV.md"
    asv_summary.write_summary(results, md, tmp_path, max_commits=2)
    header = next(line for line in md.read_text().splitlines() if "benchmark (params)" in line)
    assert [c.strip() for c in header.split("|")[2:-1]] == ["bbbbbbbb", "cccccccc"]


def test_commits_of_one_second_keep_their_git_order():
    shas = first_parent_shas(2)
    new, old = shas
    df = pd.DataFrame({"commit": [new, old], "date": [5, 5]})
    assert asv_summary.commit_order(df, ROOT) == [old, new]


def test_each_machine_gets_its_section_and_figure_and_the_mixed_history_is_labelled(
    results, tmp_path
):
    mixed = asv_summary.UNKNOWN_MIXED
    _write_result(results, "c" * 40, 3000, {STEP: ([0.001], [])}, machine=mixed)
    md = tmp_path / "ASV.md"
    frames = asv_summary.write_summary(results, md, tmp_path)
    assert list(frames) == [MACHINE, mixed]  # the mixed-CPU history last
    text = md.read_text()
    assert text.index(f"## Machine `{MACHINE}`") < text.index(f"## Machine `{mixed}`")
    assert "two different 2-core CPUs" in text.split(f"## Machine `{mixed}`")[1]
    assert "cccccccc" not in text.split(f"## Machine `{mixed}`")[0]  # no mixing
    assert (tmp_path / f"asv_history_{mixed}.png").stat().st_size > 10_000


def test_summary_without_results_says_how_to_get_them(tmp_path):
    with pytest.raises(ValueError, match="make asv"):
        asv_summary.write_summary(tmp_path, tmp_path / "a.md", tmp_path)
    with pytest.raises(ValueError, match="'nope'.*make asv"):
        asv_summary.write_summary(tmp_path, tmp_path / "a.md", tmp_path, ["nope"])
    assert asv_summary.main(["--results", str(tmp_path), "--md", str(tmp_path / "a.md")]) == 1


@pytest.mark.slow
def test_a_real_asv_run_is_read_back(tmp_path):
    conf = json.loads((ROOT / "asv.conf.json").read_text())
    conf.update(
        repo=str(ROOT),
        benchmark_dir=str(ROOT / conf["benchmark_dir"]),
        results_dir=str(tmp_path),
        html_dir=str(tmp_path / "html"),
        env_dir=str(tmp_path / "env"),
    )
    (tmp_path / "asv.conf.json").write_text(json.dumps(conf))
    asv = [sys.executable, "-m", "asv"]
    machine = ["--machine", MACHINE]
    subprocess.run([*asv, "machine", "--yes", *machine], check=True)
    run = [*asv, "run", "--config", str(tmp_path / "asv.conf.json"), "--python=same", *machine]
    run += ["--set-commit-hash", "HEAD", "--bench", r"TrainingStep\.time_step\('(dense|srigl)'\)"]
    assert subprocess.run(run, cwd=ROOT).returncode == 0
    df = asv_summary.load_results(tmp_path, MACHINE).dropna(subset=["value"])
    assert set(df["params"]) == {"dense", "srigl"} and set(df["unit"]) == {"seconds"}
    assert ((0 < df["value"]) & (df["value"] < 1)).all()  # seconds per digits-MLP step


def test_the_figure_title_names_the_machine(results, tmp_path, monkeypatch):
    import matplotlib.figure

    titles = []
    original = matplotlib.figure.Figure.suptitle
    monkeypatch.setattr(
        matplotlib.figure.Figure,
        "suptitle",
        lambda fig, text, **kw: titles.append(text) or original(fig, text, **kw),
    )
    asv_summary.write_summary(results, tmp_path / "ASV.md", tmp_path)
    assert titles and f"machine {MACHINE}: AMD EPYC" in titles[0]


def test_a_machine_folder_without_results_is_no_machine(results):
    (results / "other-2c").mkdir()
    (results / "other-2c" / "machine.json").write_text(json.dumps({"machine": "other-2c"}))
    assert asv_summary.machines(results) == [MACHINE]
