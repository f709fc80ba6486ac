"""Specification of the report: synthetic records in, REPORT.md numbers and figures out."""

from __future__ import annotations

import math
import re
import statistics

import pandas as pd
import pytest
from report_fixtures import (
    EXPERIMENTS,
    SEEDS,
    SPARSE_METHODS,
    SPARSITIES,
    make_bench_record,
    make_train_records,
    train_config,
    train_metrics,
    write_store,
)

from suite import report
from suite.report import app as report_app
from suite.report.frames import load_reference
from suite.report.render import markdown_table
from suite.results import make_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _fmt(values: list[float]) -> str:
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f} (n={len(values)})"


def _cell(values: list[float], density: float = 0.1) -> str:
    """An accuracy cell: mean ± std (n) and the measured density (the fixtures' 0.1)."""
    return f"{_fmt(values)}, density {density:.2%}"


def _section(text: str, title: str) -> str:
    """The text of the Markdown section headed ``title`` (up to the next heading of any level)."""
    start = text.index(title)
    rest = text[start + len(title) :]
    ends = [i for i in (rest.find("\n## "), rest.find("\n### ")) if i >= 0]
    return rest[: min(ends)] if ends else rest


def _rows(section: str) -> list[list[str]]:
    """The cells of every table row of ``section`` (pipes escaped as ``\\|`` stay in cells)."""
    rows = []
    for line in section.splitlines():
        if not line.startswith("|") or re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", line.strip()):
            continue  # not a table row, or the rule under the header
        rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
    return rows


def _row(section: str, *first_cells: str) -> list[str]:
    for cells in _rows(section):
        if cells[: len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no table row starting with {first_cells!r} in:\n{section}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A store with a train grid, a re-run of one seed, a smoke run of other settings and a
    bench record, reported."""
    root = tmp_path_factory.mktemp("report")
    records = make_train_records()
    rerun = make_record(  # the same config as the grid's seed 1, run again later
        "train",
        train_config("digits_mlp", "srigl", 0.99, 1),
        train_metrics(12.5, "srigl"),
        run_id="rerun-of-seed-1",
    )
    rerun["created"] = "2026-11-27T02:00:00+00:00"  # later than the grid: it wins
    stale = make_record(
        "train",
        train_config("digits_mlp", "rigl", 0.9, 0),
        train_metrics(1.0, "rigl"),
        run_id="stale-run-of-seed-0",
    )
    stale["created"] = "2026-11-26T00:00:00+00:00"  # earlier than the grid: it loses
    smoke = make_record(  # other settings (1 epoch), newest of all: it must not touch the cell
        "train",
        train_config("digits_mlp", "srigl", 0.9, 0, training={"epochs": 1}),
        train_metrics(3.25, "srigl"),
    )
    smoke["created"] = "2026-11-28T00:00:00+00:00"
    dense_again = make_record(
        "train",
        train_config("digits_cnn", "dense", 0.99, 2),  # dense at another sparsity, same seed
        train_metrics(3.0, "dense"),
    )
    dense_again["created"] = "2026-11-26T00:00:00+00:00"
    bench = make_bench_record()
    write_store(root / "runs", records + [rerun, stale, smoke, dense_again, bench])
    rep = report.build_report(root / "runs", root / "out", commands=["make reproduce PROFILE=x"])
    return {
        "records": records,
        "rerun": rerun,
        "smoke": smoke,
        "bench": bench,
        "report": rep,
        "text": rep.path.read_text(encoding="utf-8"),
    }


def _accuracies(records, experiment, method, sparsity, replace=None):
    by_seed = {}
    for rec in records:
        cfg = rec["config"]
        if (cfg["experiment"], cfg["trainer"]["label"]) != (experiment, method):
            continue
        if method != "dense" and cfg["sparsity"] != sparsity:
            continue
        by_seed[cfg["seed"]] = rec["metrics"]["top1_accuracy"]
    by_seed.update(replace or {})
    return [by_seed[s] for s in sorted(by_seed)]


def test_report_shows_mean_std_and_n_over_seeds_for_every_method_and_sparsity(built):
    text, records = built["text"], built["records"]
    for exp in EXPERIMENTS:
        section = _section(text, f"### {exp}")
        dense = _row(section, "dense")
        assert _cell(_accuracies(records, exp, "dense", None)) in dense
        for method in SPARSE_METHODS:
            cells = _row(section, method)
            for sp in SPARSITIES:
                replace = None
                if (exp, method, sp) == ("digits_mlp", "srigl", 0.99):
                    replace = {1: built["rerun"]["metrics"]["top1_accuracy"]}
                assert _cell(_accuracies(records, exp, method, sp, replace)) in cells, (exp, method)


def test_the_headline_compares_srigl_rigl_and_dense_at_every_sparsity(built):
    section = _section(built["text"], "## Headline")
    records = built["records"]
    rerun = {1: built["rerun"]["metrics"]["top1_accuracy"]}
    for exp in EXPERIMENTS:
        for sp in SPARSITIES:
            row = _row(section, exp, f"{sp:.0%}")
            replace = rerun if (exp, sp) == ("digits_mlp", 0.99) else None
            assert _cell(_accuracies(records, exp, "dense", None)) in row
            assert _cell(_accuracies(records, exp, "rigl", sp)) in row
            assert _cell(_accuracies(records, exp, "srigl", sp, replace)) in row
    # the fastest backend at 90%, batch 1 of the synthetic bench: fused, 4x vs dense, 2x vs csr
    fastest = next(r for r in _rows(section) if "fused" in r and "1" in r)
    assert fastest[-3:] == ["4.00 (no interval)", "4.00", "2.00"]  # vs dense, best dense, csr


def test_a_rerun_seed_is_counted_once_and_the_latest_run_wins(built):
    section = _section(built["text"], "### digits_mlp")
    srigl = " ".join(_row(section, "srigl"))
    assert f"(n={len(SEEDS)})" in srigl and f"(n={len(SEEDS) + 1})" not in srigl
    rigl = " ".join(_row(section, "rigl"))  # the older stale run of seed 0 is ignored
    assert _fmt(_accuracies(built["records"], "digits_mlp", "rigl", 0.9)) in rigl


def test_a_run_with_other_settings_never_replaces_a_cell_and_is_listed_with_its_file(built):
    # the case: one newer smoke run (1 epoch, n=1) must not replace a published cell
    section = _section(built["text"], "### digits_mlp")
    srigl = _row(section, "srigl")
    expected = _cell(_accuracies(built["records"], "digits_mlp", "srigl", 0.9))
    assert expected in srigl and "3.25" not in " ".join(srigl)
    other = _section(built["text"], "## Other settings")
    row = _row(other, "digits_mlp", "srigl", "90%")
    assert row[3] == "3.25 (n=1), density 10.00%"
    assert "training.epochs=1 (-)" in row[4]
    assert f"train-{built['smoke']['run_id']}.json" in row[5]
    assert "1 of other settings" in built["text"]


def test_dense_is_one_reference_per_seed_whatever_sparsity_its_config_carries(built):
    section = _section(built["text"], "### digits_cnn")
    dense = _row(section, "dense")
    assert _cell(_accuracies(built["records"], "digits_cnn", "dense", None)) in dense
    assert "3.00" not in " ".join(dense)  # the older dense run at 0.99 of seed 2 lost


def test_ablation_table_gives_the_per_seed_difference_with_its_std(built):
    section = _section(built["text"], "## Does neuron ablation help?")
    records = built["records"]
    for exp in EXPERIMENTS:
        replace = {1: built["rerun"]["metrics"]["top1_accuracy"]} if exp == "digits_mlp" else None
        with_abl = _accuracies(records, exp, "srigl", 0.99, replace)
        without = _accuracies(records, exp, "srigl_no_ablation", 0.99)
        diffs = [a - b for a, b in zip(with_abl, without)]
        row = _row(section, exp, "99%")
        assert _cell(with_abl) in row and _cell(without) in row and _fmt(diffs) in row
        assert not any("90%" in r for r in _rows(section))  # only 95-99% answer this question


def _between(text: str, start: str, end: str) -> str:
    """The text from ``start`` up to the next ``end`` (or a heading)."""
    rest = text[text.index(start) + len(start) :]
    ends = [i for i in (rest.find(end), rest.find("\n## "), rest.find("\n### ")) if i >= 0]
    return rest[: min(ends)] if ends else rest


def test_speedups_vs_dense_and_vs_csr_come_from_the_bench_rows(built):
    text = built["text"]
    rows = built["bench"]["metrics"]["rows"]
    machine = _section(text, "### Machine: ")
    assert built["bench"]["host"]["asv_name"] in text.split("### Machine: ")[1].splitlines()[0]
    assert "A/A control: none in these records" in machine  # an older-format record
    vs_dense = _between(machine, "**vs dense `F.linear`**", "**vs")
    vs_csr = _between(machine, "**vs CSR**", "**vs")
    for row in rows:
        if row["backend"] != "fused":
            continue
        csr = next(
            r
            for r in rows
            if r["backend"] == "csr"
            and (r["sparsity"], r["batch"]) == (row["sparsity"], row["batch"])
        )
        prefix = ("cpu", "kernel", "3072->768", "float32", "2", str(row["batch"]))
        prefix += (f"{row['sparsity'] * 100:g}%",)
        line_d = _row(vs_dense, *prefix)
        line_c = _row(vs_csr, *prefix)
        assert f"{row['dense_median_s'] / row['median_s']:.2f} (no interval)" in line_d
        assert f"{csr['median_s'] / row['median_s']:.2f}" in line_c


def test_whole_model_timings_and_skipped_backends_are_shown(built):
    whole = built["bench"]["metrics"]["whole_model"][0]
    section = _section(built["text"], "### Whole model")
    row = " ".join(_row(section, whole["model"]))
    assert f"{whole['dense_median_s'] / whole['median_s']:.2f}" in row
    skipped = _section(built["text"], "### Not measured")
    assert "fused_triton" in skipped and "no CUDA here" in skipped


def test_figures_are_written_as_non_empty_pngs_and_linked_from_the_report(built):
    names = {p.name for p in built["report"].figures}
    assert names == {
        "accuracy_vs_sparsity.png",
        "ablation_over_training.png",
        "speedup_vs_sparsity.png",
        "speedup_vs_batch.png",
        "whole_model.png",
    }
    for path in built["report"].figures:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000
        assert f"](figures/{path.name})" in built["text"]


def test_report_names_machine_versions_commits_and_the_regenerating_commands(built):
    text = built["text"]
    rec = built["records"][0]
    assert rec["host"]["cpu"] in text
    assert rec["versions"]["torch"] in text
    if rec["git"]["commit"]:
        assert rec["git"]["commit"][:12] in text
    assert "make reproduce PROFILE=x" in _section(text, "## Regenerate")


def test_paper_figures_sit_next_to_a_matching_experiment(tmp_path):
    ref = load_reference("accuracy.csv")
    recs = [
        make_record(
            "train",
            {**train_config("digits_mlp", "srigl", 0.9, seed), "experiment": "cifar10_resnet18"},
            train_metrics(90.0 + seed, "srigl"),
        )
        for seed in (0, 1)
    ]
    write_store(tmp_path / "runs", recs)
    text = report.build_report(tmp_path / "runs", tmp_path / "out").path.read_text()
    section = _section(text, "### cifar10_resnet18")
    paper = ref[(ref["experiment"] == "cifar10_resnet18") & (ref["method"] == "srigl")]
    row = " ".join(_row(section, "paper: srigl"))
    for top1 in paper["top1"]:
        assert f"{top1:.2f}" in row
    assert _fmt([90.0, 91.0]) in " ".join(_row(section, "srigl"))


def test_reference_tables_hold_every_paper_figure(built):
    section = _section(built["text"], "### Reference figures (paper)")
    for r in load_reference("accuracy.csv").itertuples():
        assert f"{r.top1:.2f}" in section
    timing = _section(built["text"], "### Layer timing next to the paper's")
    for r in load_reference("layer_timing.csv").itertuples():
        assert f"{r.time_us:.2f}" in timing


def _previous_report(out):
    """A report from an earlier run in ``out``: its files' bytes by relative path."""
    write_store(out.parent / "prev_runs", make_train_records()[:40] + [make_bench_record()])
    report.build_report(out.parent / "prev_runs", out)
    foreign = out / "tables" / "notes.csv"  # not the report's: never touched
    foreign.write_text("mine")
    return {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _unchanged(out, before) -> bool:
    now = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    return now == before


def test_an_invalid_record_file_fails_the_report_naming_it_and_nothing_changes(tmp_path):
    before = _previous_report(tmp_path / "out")
    write_store(tmp_path / "runs", make_train_records()[:3])
    bad = tmp_path / "runs" / "train-broken.json"
    bad.write_text('{"kind": "train"')
    with pytest.raises(report.InvalidStoreError, match="train-broken.json"):
        report.build_report(tmp_path / "runs", tmp_path / "out")
    assert _unchanged(tmp_path / "out", before)


def test_a_failure_while_building_leaves_the_previous_report_figures_and_tables(
    tmp_path, monkeypatch
):
    before = _previous_report(tmp_path / "out")
    write_store(tmp_path / "runs", make_train_records(rng_seed=1))

    def broken(*_args, **_kw):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr(report_app.figures, "ablation_over_training", broken)
    with pytest.raises(RuntimeError, match="plotting failed"):
        report.build_report(tmp_path / "runs", tmp_path / "out")
    assert _unchanged(tmp_path / "out", before)  # no temporary folder left behind either


@pytest.mark.parametrize("runs", ["missing", "empty"])
def test_a_missing_or_empty_runs_folder_is_an_error_and_nothing_changes(tmp_path, runs, caplog):
    before = _previous_report(tmp_path / "out")
    if runs == "empty":
        (tmp_path / runs).mkdir()
    with pytest.raises(report.ReportError, match=runs):
        report.build_report(tmp_path / runs, tmp_path / "out")
    assert report.main(["--runs", str(tmp_path / runs), "--out", str(tmp_path / "out")]) == 2
    assert str(tmp_path / runs) in caplog.text
    assert _unchanged(tmp_path / "out", before)


def test_cli_exits_non_zero_on_invalid_files_or_warns_naming_them_when_allowed(tmp_path, caplog):
    write_store(tmp_path / "runs", make_train_records()[:3])
    (tmp_path / "runs" / "train-broken.json").write_text("[]")
    args = ["--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert report.main(args) == 2
    assert "train-broken.json" in caplog.text
    assert not (tmp_path / "out" / "REPORT.md").exists()
    caplog.clear()
    assert report.main(args + ["--allow-invalid"]) == 0
    text = (tmp_path / "out" / "REPORT.md").read_text()
    assert "WARNING: 1 invalid record file" in text and "train-broken.json" in text
    assert "train-broken.json" in caplog.text and "WARNING" in caplog.text


def test_without_bench_records_the_reports_own_stale_figures_go_and_others_stay(tmp_path):
    stale = tmp_path / "out" / "figures" / "speedup_vs_batch.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_MAGIC)
    foreign = stale.parent / "asv_history.png"  # written by `make asv-publish`, not the report
    foreign.write_bytes(PNG_MAGIC)
    write_store(tmp_path / "runs", make_train_records()[:3])
    rep = report.build_report(tmp_path / "runs", tmp_path / "out")
    assert not stale.exists()  # no bench records: last time's figure is gone
    assert foreign.exists()
    text = rep.path.read_text()
    assert "No bench records" in text
    assert {p.name for p in rep.figures} <= {"accuracy_vs_sparsity.png"}


def test_markdown_table_escapes_pipes_and_shows_missing_values_as_dash():
    frame = pd.DataFrame({"a": ["x|y", None], "b": [1.23456, math.nan]})
    text = markdown_table(frame)
    assert _rows(text) == [["a", "b"], ["x\\|y", "1.23"], ["-", "-"]]
    assert text.splitlines()[1].replace(" ", "").startswith("|:-")  # a pipe table's rule
    assert markdown_table(frame.iloc[0:0]) == "(empty)"
