"""suite.asv_benchmarks.instruction_counts: the cases, the worker outside valgrind, reading
callgrind's dumps back, and one tiny real callgrind run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from suite.asv_benchmarks import instruction_counts as ic

ALL = ic.case_names(["dense", "fused", "csr", "fused_triton"])


def test_fused_cases_cover_the_vit_mlp_shapes_at_the_issue_grid():
    fused = [n for n in ALL if n.startswith("fused/")]
    assert fused == ic.fused_case_names()
    for shape in ("fc1", "fc2"):
        assert {n for n in fused if f"/{shape}/" in n} == {
            f"fused/{shape}/0.9/b1",
            f"fused/{shape}/0.9/b197",
            f"fused/{shape}/0.9/b256",
            f"fused/{shape}/0.99/b1",
        }
    assert ic.FUSED_SHAPES == {"fc1": (768, 3072), "fc2": (3072, 768)}


def test_every_other_backend_a_training_step_and_a_topology_update_are_cases():
    assert [n for n in ALL if n.startswith("backend/")] == [
        "backend/dense/fc1/0.9/b1",
        "backend/csr/fc1/0.9/b1",
        "backend/fused_triton/fc1/0.9/b1",
    ]
    assert [n for n in ALL if n.startswith(("step/", "update/"))] == [
        "step/dense",
        "step/rigl",
        "step/srigl",
        "update/rigl",
        "update/srigl",
    ]
    assert ALL[0] == "smoke" and len(set(ALL)) == len(ALL)


def test_an_unknown_case_names_itself_and_the_known_forms():
    with pytest.raises(ValueError, match=r"'nope/x'.*fused/<fc1\|fc2>"):
        ic.build_case("nope/x")


@pytest.mark.parametrize("name", ["smoke", "backend/naive/fc1/0.9/b1", "update/srigl"])
def test_cases_build_and_run_outside_valgrind(name):
    call = ic.build_case(name)
    call()
    call()


def test_unavailable_backend_case_is_a_skip_with_its_reason(tmp_path, monkeypatch):
    import backends

    monkeypatch.setattr(backends, "available", lambda name, device: (False, "no such thing"))
    manifest = ic.count_cases(["smoke"], tmp_path)
    assert manifest == {
        "dumped": [],
        "skipped": {"smoke": "backend 'dense' unavailable on cpu: no such thing"},
    }


def test_worker_outside_valgrind_writes_the_manifest_in_dump_order(tmp_path):
    manifest = ic.count_cases(["smoke", "step/dense"], tmp_path)
    assert manifest["dumped"] == ["smoke", "step/dense"] and manifest["skipped"] == {}
    assert json.loads((tmp_path / ic.MANIFEST).read_text()) == manifest


def _fake_run(folder: Path, counts: dict[str, int], skipped: dict[str, str]) -> None:
    (folder / ic.MANIFEST).write_text(json.dumps({"dumped": list(counts), "skipped": skipped}))
    total = 0
    for k, value in enumerate(counts.values(), start=1):
        total += value
        text = f"version: 1\ncmd: python\npart: {k}\nevents: Ir\nsummary: {value}\n"
        (folder / f"{ic.OUT_PREFIX}.{k}").write_text(text + f"fn=x\n0 1\ntotals: {total}\n")
    (folder / ic.OUT_PREFIX).write_text("summary: 5\n")  # the final dump at exit: not a case


def test_dumps_are_read_in_order_by_their_summary_not_the_cumulative_totals(tmp_path):
    _fake_run(tmp_path, {"a": 10, "b": 7, "c": 12}, {"d": "why"})
    assert ic.read_counts(tmp_path) == {
        "counts": {"a": 10, "b": 7, "c": 12},
        "skipped": {"d": "why"},
    }


def test_dumps_sort_numerically_so_the_tenth_follows_the_ninth(tmp_path):
    counts = {f"case{i}": 100 + i for i in range(12)}
    _fake_run(tmp_path, counts, {})
    assert ic.read_counts(tmp_path)["counts"] == counts


def test_a_run_without_manifest_or_with_missing_dumps_is_an_error(tmp_path):
    with pytest.raises(ic.CountError, match="did not finish"):
        ic.read_counts(tmp_path)
    _fake_run(tmp_path, {"a": 1, "b": 2}, {})
    (tmp_path / f"{ic.OUT_PREFIX}.2").unlink()
    with pytest.raises(ic.CountError, match="1 callgrind dumps .* for 2 cases"):
        ic.read_counts(tmp_path)


@pytest.mark.slow  # two valgrind runs that import torch: about a minute of CPU each
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_one_valgrind_process_counts_the_tiny_case_the_same_twice():
    first = ic.collect(["smoke"])
    second = ic.collect(["smoke"])
    assert first["skipped"] == {} and 10_000 < first["counts"]["smoke"] < 10_000_000
    assert abs(first["counts"]["smoke"] - second["counts"]["smoke"]) <= (
        first["counts"]["smoke"] * 0.001
    )


def test_a_backend_valgrind_cannot_run_is_skipped_with_the_reason(tmp_path):
    manifest = ic.count_cases(["backend/compiled/fc1/0.9/b1"], tmp_path)
    assert manifest["dumped"] == []
    assert "SIGILL" in manifest["skipped"]["backend/compiled/fc1/0.9/b1"]
