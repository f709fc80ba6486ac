"""README.md's results block: generated from the same frames as REPORT.md, rewritten between its
markers by ``make report``; a README that disagrees with REPORT fails here."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from report_fixtures import make_bench_record, make_train_records, write_store

from suite.report.app import README_BEGIN, README_END, ReportError, build_report, main

ROOT = Path(__file__).resolve().parents[3]
README = f"# a project\n\nintro\n\n{README_BEGIN}\nhand-copied 1.77x\n{README_END}\n\nafter\n"


def block_of(text: str) -> str:
    """The text between the README's results markers."""
    return text.split(README_BEGIN, 1)[1].split(README_END, 1)[0]


def disagreements(readme_text: str, report_text: str) -> list[str]:
    """Table lines and claim lines (``- `srigl` vs ...``) of the README's block that REPORT.md
    does not hold, word for word."""
    lines = [line for line in block_of(readme_text).splitlines() if line.startswith(("|", "- `"))]
    report_lines = set(report_text.splitlines())
    return [line for line in lines if line not in report_lines]


@pytest.fixture
def project(tmp_path):
    """A project folder: README.md with markers, results/runs with train and bench records."""
    (tmp_path / "README.md").write_text(README)
    write_store(tmp_path / "results" / "runs", make_train_records() + [make_bench_record()])
    return tmp_path


def test_make_report_rewrites_the_block_from_the_reports_own_tables(project):
    rep = build_report(project / "results" / "runs", project / "results")
    readme = (project / "README.md").read_text()
    assert rep.readme == project / "README.md"
    assert readme.startswith("# a project\n\nintro\n\n") and readme.endswith("\n\nafter\n")
    assert "hand-copied" not in readme and "| digits_mlp" in block_of(readme)
    assert "(no interval)" in block_of(readme)  # the fixture's bench rows are old-format
    assert disagreements(readme, rep.path.read_text()) == []
    build_report(project / "results" / "runs", project / "results")  # idempotent
    assert (project / "README.md").read_text() == readme


def test_the_blocks_claims_are_the_reports(project):
    rep = build_report(project / "results" / "runs", project / "results")
    readme = (project / "README.md").read_text()
    claims = [x for x in block_of(readme).splitlines() if x.startswith("- `srigl` vs `rigl`")]
    assert len(claims) == 2  # one per experiment of the fixtures
    assert disagreements(readme, rep.path.read_text()) == []
    flipped = claims[0].replace("better", "worse") if "better" in claims[0] else "- `x`"
    assert disagreements(readme.replace(claims[0], flipped), rep.path.read_text())


def test_a_hand_edited_number_disagrees_with_the_report(project):
    rep = build_report(project / "results" / "runs", project / "results")
    readme = (project / "README.md").read_text()
    line = next(x for x in block_of(readme).splitlines() if x.startswith("| digits_mlp"))
    edited = readme.replace(line, line.replace(" ± ", "1 ± ", 1))
    assert disagreements(edited, rep.path.read_text())


def test_a_report_into_a_scratch_folder_touches_no_readme(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch") / "out"
    rep = build_report(project / "results" / "runs", out)
    assert rep.readme is None and (project / "README.md").read_text() == README


def test_an_explicit_readme_without_markers_is_an_error_before_any_work(project):
    (project / "plain.md").write_text("no markers\n")
    code = main(
        ["--runs", str(project / "results" / "runs"), "--out", str(project / "o"),
         "--readme", str(project / "plain.md")]
    )  # fmt: skip
    assert code == 2 and not (project / "o" / "REPORT.md").exists()
    with pytest.raises(ReportError, match="plain.md: needs exactly one"):
        build_report(project / "results" / "runs", project / "o", readme=project / "plain.md")


def test_the_committed_readme_block_is_the_one_make_report_writes(tmp_path):
    """The README of this repository against its committed records (regenerated in tmp): the
    store and the vs-probe records beside it."""
    shutil.copytree(ROOT / "results" / "runs", tmp_path / "results" / "runs")
    for side in ("probes", "load"):  # records of vs-probe and under-load beside the store
        if (ROOT / "results" / side).is_dir():
            shutil.copytree(ROOT / "results" / side, tmp_path / "results" / side)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    (tmp_path / "README.md").write_text(readme, encoding="utf-8")
    rep = build_report(tmp_path / "results" / "runs", tmp_path / "results")
    regenerated = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert disagreements(regenerated, rep.path.read_text()) == []
    assert block_of(readme) == block_of(regenerated), "README.md's block is stale: make report"
