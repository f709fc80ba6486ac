"""Specification of `make reproduce` (suite.reproduce): the job grid, resuming, failures."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import yaml
from report_fixtures import make_bench_record, train_config, train_metrics, write_store

from suite import reproduce
from suite.results import ResultStore, make_record

PROFILE_DIR = Path(reproduce.CONF_DIR) / "profile"
PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
TINY = [
    "profile=quick",
    "profile.train.experiments=[digits_mlp]",
    "profile.train.methods=[dense,srigl]",
    "profile.train.sparsities=[0.9]",
    "profile.train.seeds=[0]",
    "train_overrides=['progress=false','training.epochs=2']",
    "workers=1",
    "bench.enabled=false",
]


def _paths(tmp_path: Path) -> list[str]:
    return [
        f"results_dir={tmp_path / 'runs'}",
        f"out_dir={tmp_path / 'out'}",
        f"checkpoint_dir={tmp_path / 'ckpt'}",
        f"job_log_dir={tmp_path / 'logs'}",
    ]


def _expected_grid(profile: str) -> set[tuple]:
    grid = yaml.safe_load((PROFILE_DIR / f"{profile}.yaml").read_text())["train"]
    expected = set()
    for exp in grid["experiments"]:
        for seed in grid["seeds"]:
            for method in grid["methods"]:
                for sp in [None] if method == "dense" else grid["sparsities"]:
                    expected.add((exp, method, sp, seed))
    return expected


@pytest.mark.parametrize("profile", PROFILES)
def test_dry_run_lists_exactly_the_profile_grid_with_dense_once_per_seed(profile, tmp_path, capsys):
    cfg = reproduce.compose([f"profile={profile}", "dry_run=1", *_paths(tmp_path)])
    summary = reproduce.run(cfg)
    got = [(j.experiment, j.method, j.sparsity, j.seed) for j in summary.jobs]
    assert len(got) == len(set(got))
    assert set(got) == _expected_grid(profile)
    out = capsys.readouterr().out
    listed = [
        line for line in out.splitlines() if line.startswith("  [todo] python -m suite.train")
    ]
    assert len(listed) == len(got)
    assert "then bench [todo]: python -m suite.bench" in out
    assert "then report [todo]: python -m suite.report" in out
    assert not (tmp_path / "runs").exists() and not (tmp_path / "logs").exists()  # ran nothing


def test_the_default_grid_is_2_experiments_7_methods_4_sparsities_5_seeds():
    # dense, static, set, rigl, rigl_sparse_init, srigl, srigl_no_ablation
    grid = _expected_grid("default")
    assert len(grid) == 2 * 5 * (1 + 6 * 4)  # dense once per seed, not per sparsity


def test_dense_jobs_carry_sparsity_0_and_every_job_writes_to_the_configured_store(tmp_path):
    cfg = reproduce.compose(["profile=quick", "dry_run=1", *_paths(tmp_path)])
    for job in reproduce.plan_jobs(cfg):
        assert f"results_dir={tmp_path / 'runs'}" in job.overrides
        if job.method == "dense":
            assert "sparsity=0.0" in job.overrides
            assert "sparsity" not in dict(job.match)  # any stored dense run of the seed counts


def test_the_bench_step_runs_the_quick_bench_for_quick_and_default_profiles():
    for profile, bench in (("quick", "quick"), ("default", "quick"), ("cifar10", "cifar10")):
        cfg = reproduce.compose([f"profile={profile}"])
        assert reproduce.bench_profile(cfg) == bench
        assert f"profile={bench}" in reproduce.bench_command(cfg)


def test_jobs_whose_record_is_in_the_store_are_done_and_are_not_rerun(tmp_path, capsys):
    store_records = [
        make_record(
            "train", train_config("digits_mlp", "dense", 0.99, 0), train_metrics(97, "dense")
        ),
        make_record(
            "train", train_config("digits_mlp", "srigl", 0.9, 0), train_metrics(96, "srigl")
        ),
        make_record(
            "train", train_config("digits_mlp", "srigl", 0.9, 7), train_metrics(96, "srigl")
        ),
    ]
    write_store(tmp_path / "runs", store_records)
    cfg = reproduce.compose(["profile=quick", "dry_run=1", *_paths(tmp_path)])
    summary = reproduce.run(cfg)
    done = {(j.experiment, j.method, j.sparsity, j.seed) for j in summary.done_before}
    assert done == {("digits_mlp", "dense", None, 0), ("digits_mlp", "srigl", 0.9, 0)}
    out = capsys.readouterr().out
    assert out.count("  [done] ") == 2
    assert f"({len(done)} already in" in out


def test_record_matching_compares_groups_by_label_and_numbers_by_value():
    config = {
        "experiment": "digits_mlp",
        "sparsity": 0.9,
        "trainer": {"name": "srigl", "label": "srigl_no_ablation"},
        "training": {"epochs": 2},
    }
    assert reproduce.record_matches(config, [("trainer", "srigl_no_ablation"), ("sparsity", 0.9)])
    assert reproduce.record_matches(config, [("training.epochs", 2)])
    assert not reproduce.record_matches(config, [("trainer", "rigl")])
    # srigl_no_ablation is the srigl trainer (name) with another label: not a srigl run
    assert not reproduce.record_matches(config, [("trainer", "srigl")])
    assert reproduce.record_matches({"profile": {"name": "quick"}}, [("profile", "quick")])
    assert not reproduce.record_matches(config, [("training.epochs", 3)])
    assert not reproduce.record_matches(config, [("seed", 0)])  # missing key: not a match


def test_parse_override_reads_values_as_yaml():
    assert reproduce.parse_override("sparsity=0.95") == ("sparsity", 0.95)
    assert reproduce.parse_override("+training.epochs=2") == ("training.epochs", 2)
    assert reproduce.parse_override("trainer=srigl") == ("trainer", "srigl")
    with pytest.raises(ValueError, match="key=value"):
        reproduce.parse_override("sparsity")


def test_an_empty_grid_axis_is_an_error_naming_the_axis(tmp_path):
    cfg = reproduce.compose(["profile=quick", "profile.train.seeds=[]", *_paths(tmp_path)])
    with pytest.raises(reproduce.ReproduceError, match="train.seeds is empty"):
        reproduce.plan_jobs(cfg)


def test_missing_data_stops_the_run_before_any_job_with_the_loaders_message(tmp_path, capsys):
    argv = [
        "profile=cifar10",
        "require_gpu=false",
        f"train_overrides=['progress=false','dataset.root={tmp_path / 'nodata'}']",
        *_paths(tmp_path),
    ]
    assert reproduce.main(argv) == 2
    err = capsys.readouterr().err
    assert "cifar10" in err and str(tmp_path / "nodata") in err and "nothing was run" in err
    assert not (tmp_path / "logs").exists() and not (tmp_path / "runs").exists()


@pytest.mark.skipif(
    torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA"
)
def test_a_profile_that_requires_a_gpu_refuses_to_start_without_one(tmp_path, capsys):
    assert reproduce.main(["profile=imagenet", *_paths(tmp_path)]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def _fake_bench(tmp_path: Path) -> list[str]:
    """A stand-in for `python -m suite.bench` that writes one bench record of profile quick."""
    rec = make_bench_record()
    src = tmp_path / "bench_record.json"
    src.write_text(json.dumps(rec))
    code = (
        "import json, sys; from suite.results import ResultStore; "
        f"ResultStore(sys.argv[1]).write(json.load(open({str(src)!r})))"
    )
    return [sys.executable, "-c", code, str(tmp_path / "runs")]


def test_bench_runs_after_the_jobs_and_is_skipped_once_its_record_exists(tmp_path, monkeypatch):
    # every train job of the tiny grid is already in the store: only bench and report run
    write_store(
        tmp_path / "runs",
        [
            make_record(
                "train",
                train_config("digits_mlp", "dense", 0.0, 0, training={"epochs": 2}),
                train_metrics(97, "dense"),
            ),
            make_record(
                "train",
                train_config("digits_mlp", "srigl", 0.9, 0, training={"epochs": 2}),
                train_metrics(95, "srigl"),
            ),
        ],
    )
    calls = []

    def fake_command(cfg):
        calls.append(reproduce.bench_profile(cfg))
        return _fake_bench(tmp_path)

    monkeypatch.setattr(reproduce, "bench_command", fake_command)
    argv = [*TINY[:-1], "bench.enabled=true", *_paths(tmp_path)]
    summary = reproduce.run(reproduce.compose(argv))
    assert summary.ok and summary.results == [] and len(summary.done_before) == 2
    assert summary.bench == "ok" and calls == ["quick"]
    assert "### vs dense" in summary.report.read_text()
    again = reproduce.run(reproduce.compose(argv))
    assert again.bench.startswith("skipped") and calls == ["quick"]


def test_a_tiny_profile_runs_end_to_end_and_a_second_call_skips_the_done_jobs(tmp_path):
    argv = [*TINY, *_paths(tmp_path)]
    assert reproduce.main(argv) == 0
    records = ResultStore(tmp_path / "runs").read("train")
    assert sorted(r["config"]["trainer"]["label"] for r in records) == ["dense", "srigl"]
    assert all(r["config"]["training"]["epochs"] == 2 for r in records)
    assert (tmp_path / "out" / "REPORT.md").is_file()
    files = sorted(p.name for p in (tmp_path / "runs").iterdir())
    again = reproduce.run(reproduce.compose(argv))
    assert again.results == [] and len(again.done_before) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == files


def test_a_failed_job_is_reported_at_the_end_the_others_still_run_and_the_exit_is_1(
    tmp_path, capsys
):
    argv = [*TINY, "profile.train.methods=[no_such_method,dense]", *_paths(tmp_path)]
    assert reproduce.main(argv) == 1
    out = capsys.readouterr().out
    assert "FAILED digits_mlp/no_such_method/s0.9/seed0" in out
    assert "rerun: python -m suite.train experiment=digits_mlp trainer=no_such_method" in out
    records = ResultStore(tmp_path / "runs").read("train")
    assert [r["config"]["trainer"]["label"] for r in records] == ["dense"]


@pytest.mark.slow
def test_two_worker_processes_run_the_grid_like_one(tmp_path):
    argv = [*TINY, "workers=2", "threads_per_worker=1", *_paths(tmp_path)]
    assert reproduce.main(argv) == 0
    records = ResultStore(tmp_path / "runs").read("train")
    assert sorted(r["config"]["trainer"]["label"] for r in records) == ["dense", "srigl"]
