"""Specification of `make reproduce` (suite.reproduce): a fresh store, the grid as one Hydra
multirun, the comparison with the published records, resuming, publishing."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from report_fixtures import bench_row, train_config, train_metrics, whole_model_row

from hydra_plugins.srigl_bench_plugins.grids_sweeper import expand_grids
from suite import machine, reproduce
from suite.results import ResultStore, make_record

PROFILE_DIR = Path(reproduce.CONF_DIR) / "profile"
PROFILES = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]
TINY = [
    "profile=quick",
    "profile.train.experiments=[digits_mlp]",
    "profile.train.methods=[dense,srigl]",
    "profile.train.sparsities=[0.9]",
    "profile.train.seeds=[0]",
    "train_overrides=['progress=false','training.epochs=2','limit_batches=4','trainer.delta_t=2']",
    "bench.enabled=false",
]


def _paths(tmp_path: Path) -> list[str]:
    return [
        f"published_dir={tmp_path / 'published'}",
        f"store_dir={tmp_path / 'store'}",
        f"checkpoint_dir={tmp_path / 'ckpt'}",
        f"sweep_dir={tmp_path / 'multirun'}",
        f"out={tmp_path / 'REPRODUCTION.md'}",
        f"figure={tmp_path / 'figures' / 'reproduction.png'}",
        f"report_out={tmp_path / 'report'}",
        f"superseded_dir={tmp_path / 'superseded'}",
    ]


def _expected_grid(profile: str) -> set[tuple]:
    """The jobs the profile's YAML asks for, read without the code under test: the train grid
    (none where its methods are empty), then every extra grid with its overrides, those of the
    shared grid files its defaults list names (``grids@train: <name>``) first."""
    text = yaml.safe_load((PROFILE_DIR / f"{profile}.yaml").read_text())
    grid = text["train"]
    grids = [{**grid, "overrides": {}}] if grid.get("methods") else []
    for entry in text.get("defaults", []):
        if isinstance(entry, dict) and "grids@train" in entry:
            shared = PROFILE_DIR / "grids" / f"{entry['grids@train']}.yaml"
            grids += yaml.safe_load(shared.read_text())["extra_grids"]
    grids += list(grid.get("extra_grids") or [])
    expected = set()
    for g in grids:
        overrides = tuple(
            sorted((k, str(v).lower()) for k, v in (g.get("overrides") or {}).items())
        )
        for exp in g["experiments"]:
            for seed in grid["seeds"]:
                for method in g["methods"]:
                    for sp in [0.0] if method == "dense" else g["sparsities"]:
                        expected.add((exp, method, float(sp), seed, overrides))
    return expected


def _swept_jobs(cfg) -> list[tuple]:
    jobs = expand_grids(reproduce.sweep_grids(cfg), [], OverridesParser.create())
    out = []
    for job in jobs:
        kv = dict(o.split("=", 1) for o in job)
        axes = (kv.pop("experiment"), kv.pop("trainer"), float(kv.pop("sparsity")))
        seed = int(kv.pop("seed"))
        rest = tuple(sorted((k, v.lower()) for k, v in kv.items()))  # Hydra: True == true
        out.append((*axes, seed, rest))
    return out


# --------------------------------------------------------------------------- the sweep


@pytest.mark.parametrize("profile", PROFILES)
def test_the_sweep_is_exactly_the_profile_grid_with_dense_once_per_seed(profile, tmp_path):
    cfg = reproduce.compose([f"profile={profile}", *_paths(tmp_path)])
    jobs = _swept_jobs(cfg)
    assert len(jobs) == len(set(jobs)) == reproduce.expected_jobs(cfg)
    assert set(jobs) == _expected_grid(profile)
    cmd = reproduce.sweep_command(cfg)
    assert cmd[1:4] == ["-m", "suite.train", "-m"] and "hydra/sweeper=grids" in cmd
    assert f"results_dir={tmp_path / 'store'}" in cmd  # the fresh store, never published_dir
    assert "skip_existing=true" in cmd and "resume=false" in cmd


def test_the_default_grid_is_2_experiments_7_methods_4_sparsities_5_seeds_plus_the_nm_grids():
    cfg = reproduce.compose(["profile=default"])
    main = 2 * 5 * (1 + 6 * 4)  # dense once per seed
    nm = reproduce.compose(["profile=nm"])
    assert reproduce.expected_jobs(nm) == 95
    assert reproduce.expected_jobs(cfg) == main + 95 == 345  # issue 21 item 3
    # the N:M grids are the nm profile's, not a copy: the same jobs, the same overrides
    assert set(_swept_jobs(nm)) <= set(_swept_jobs(cfg))
    assert cfg.profile.train.extra_grids == nm.profile.train.extra_grids


def test_a_main_grid_with_one_axis_empty_is_still_an_error_beside_extra_grids(tmp_path):
    cfg = reproduce.compose(["profile=nm", "profile.train.methods=[srigl]", *_paths(tmp_path)])
    with pytest.raises(reproduce.ReproduceError, match="train.experiments is empty"):
        reproduce.sweep_grids(cfg)


def _seed_order(jobs: list[tuple]) -> list[int]:
    return [job[3] for job in jobs]


def test_the_nm_profile_runs_nm_beside_uniform_srigl_and_rigl_at_equal_sparsity():
    cfg = reproduce.compose(["profile=nm"])
    jobs = _swept_jobs(cfg)
    # per seed: srigl_fan_in on the MLP, and on each of 2 experiments 3 N:M + 2 x 3 uniform
    assert reproduce.expected_jobs(cfg) == len(jobs) == 5 * (1 + 2 * (3 + 2 * 3))
    cnn = [j for j in jobs if j[0] == "digits_cnn"]
    assert cnn and all(("trainer.dense_first_layer", "true") in j[4] for j in cnn)
    for method, label in (("srigl", "srigl_uniform"), ("rigl", "rigl_uniform")):
        runs = [j for j in jobs if j[1] == method]
        assert {j[2] for j in runs} == {0.5, 0.75, 0.875}
        assert all(
            {("trainer.distribution", "uniform"), ("trainer.label", label)} <= set(j[4])
            for j in runs
        )
    assert {(j[1], j[2]) for j in jobs if j[1].startswith("nm_")} == {
        ("nm_2_4", 0.5),
        ("nm_1_4", 0.75),
        ("nm_1_8", 0.875),
    }
    assert reproduce.bench_runs(cfg) == []  # accuracy only


def test_each_grid_keeps_seed_first_order():
    cfg = reproduce.compose(["profile=nm"])
    jobs, start = _swept_jobs(cfg), 0
    for grid in reproduce.sweep_grids(cfg):
        n = 5 * math.prod(len(grid[k].split(",")) for k in ("experiment", "trainer", "sparsity"))
        seeds = _seed_order(jobs[start : start + n])
        assert seeds == sorted(seeds) and len(set(seeds)) == 5, grid
        start += n
    assert start == len(jobs)


def _nm_with(extra: str) -> list[str]:
    return ["profile=nm", f"profile.train.extra_grids={extra}"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[3]", r"train.extra_grids\[0\]=3 is not a mapping"),
        (
            "[{experiments:[digits_mlp],methods:[rigl],sparsities:[0.5],seeds:[1]}]",
            r"train.extra_grids\[0\] has unknown key\(s\) \['seeds'\]",
        ),
        (
            "[{experiments:[],methods:[rigl],sparsities:[0.5]}]",
            r"train.extra_grids\[0\].experiments is empty",
        ),
        (
            "[{experiments:[digits_mlp],methods:[rigl]}]",
            r"train.extra_grids\[0\].sparsities is empty but methods \['rigl'\]",
        ),
        (
            "[{experiments:[digits_mlp],methods:[rigl],sparsities:[0.5],overrides:{sparsity:0.9}}]",
            r"train.extra_grids\[0\].overrides key 'sparsity' is invalid",
        ),
        (
            "[{experiments:[digits_mlp],methods:[rigl],sparsities:[0.5],overrides:{a.b:'x,y'}}]",
            r"train.extra_grids\[0\].overrides.a.b='x,y' is invalid",
        ),
        (
            "[{experiments:[digits_mlp],methods:[srigl_fan_in],sparsities:[0.9]},"
            "{experiments:[digits_mlp],methods:[srigl_fan_in],sparsities:[0.9]}]",
            r"train.extra_grids\[1\] repeats 5 job\(s\) of an earlier grid",
        ),
    ],
)
def test_a_bad_extra_grid_is_a_one_line_error_naming_the_profile_and_the_entry(extra, message):
    cfg = reproduce.compose(_nm_with(extra))
    for call in (reproduce.sweep_grids, reproduce.expected_jobs):
        with pytest.raises(reproduce.ReproduceError, match=message) as info:
            call(cfg)
        assert str(info.value).startswith("profile 'nm': ") and "\n" not in str(info.value)


def test_extra_grids_with_dense_run_dense_once_per_seed_with_their_overrides():
    cfg = reproduce.compose(
        _nm_with(
            "[{experiments:[digits_cnn],methods:[dense,rigl],sparsities:[0.5],"
            "overrides:{trainer.dense_first_layer:true}}]"
        )
    )
    jobs = _swept_jobs(cfg)
    assert len(jobs) == reproduce.expected_jobs(cfg) == 5 * 2  # nm has no main grid
    dense = [j for j in jobs if j[1] == "dense"]
    assert len(dense) == 5 and all(j[4] == (("trainer.dense_first_layer", "true"),) for j in dense)


def test_local_profiles_run_2_workers_x_1_thread_and_the_paper_profiles_go_to_slurm():
    for profile in ("quick", "default"):
        cmd = reproduce.sweep_command(reproduce.compose([f"profile={profile}"]))
        assert "hydra/launcher=pool" in cmd
        assert "hydra.launcher.workers=2" in cmd and "hydra.launcher.threads_per_worker=1" in cmd
    for profile in ("cifar10", "imagenet"):
        cmd = reproduce.sweep_command(reproduce.compose([f"profile={profile}"]))
        assert "hydra/launcher=slurm" in cmd
        assert not any(c.startswith("hydra.launcher.workers") for c in cmd)
    cmd = reproduce.sweep_command(
        reproduce.compose(
            ["profile=cifar10", "launcher_overrides=['hydra.launcher.partition=gpu']"]
        )
    )
    assert "hydra.launcher.partition=gpu" in cmd


def test_a_reproduction_runs_the_bench_again_with_whole_models_for_the_default_profile():
    runs = reproduce.bench_runs(reproduce.compose(["profile=default"]))
    assert ["profile=quick"] in runs
    assert any("whole_model=true" in r for r in runs)
    assert reproduce.bench_runs(reproduce.compose(["profile=cifar10"])) == [["profile=cifar10"]]
    cmd = reproduce.bench_command(reproduce.compose(["profile=default"]), runs[0])
    assert cmd[1:3] == ["-m", "suite.bench"] and any(c.startswith("results_dir=") for c in cmd)


def test_dry_run_lists_the_sweep_and_the_bench_and_runs_nothing(tmp_path, caplog):
    caplog.set_level("INFO")
    assert reproduce.main(["profile=default", "dry_run=1", *_paths(tmp_path)]) == 0
    assert "345 train jobs" in caplog.text
    assert 'trainer:"nm_2_4"' in caplog.text and "srigl_uniform" in caplog.text  # N:M grids
    assert "train: python -m suite.train -m hydra/launcher=pool" in caplog.text
    assert caplog.text.count("bench: python -m suite.bench") == 2
    assert not any(tmp_path.iterdir())  # ran nothing, wrote nothing


def test_an_empty_grid_axis_is_an_error_naming_the_axis(tmp_path):
    cfg = reproduce.compose(["profile=quick", "profile.train.seeds=[]", *_paths(tmp_path)])
    with pytest.raises(reproduce.ReproduceError, match="train.seeds is empty"):
        reproduce.sweep_grids(cfg)


def test_missing_data_stops_the_run_before_any_job_with_the_loaders_message(tmp_path, caplog):
    argv = [
        "profile=cifar10",
        "require_gpu=false",
        f"train_overrides=['progress=false','dataset.root={tmp_path / 'nodata'}']",
        *_paths(tmp_path),
    ]
    assert reproduce.main(argv) == 2
    assert "cifar10" in caplog.text and str(tmp_path / "nodata") in caplog.text
    assert "nothing was run" in caplog.text
    assert not (tmp_path / "store").exists() and not (tmp_path / "multirun").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_a_profile_that_requires_a_gpu_refuses_to_start_without_one(tmp_path, caplog):
    assert reproduce.main(["profile=imagenet", *_paths(tmp_path)]) == 2
    assert "needs a CUDA GPU" in caplog.text


# --------------------------------------------------------------------------- the store


def test_a_fresh_start_removes_only_its_own_records_and_refuses_a_folder_it_did_not_make(
    tmp_path,
):
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    store = tmp_path / "store"
    store.mkdir()
    (store / "mine.txt").write_text("not a reproduction")
    with pytest.raises(reproduce.ReproduceError, match="no reproduction wrote"):
        reproduce.prepare_store(cfg)
    (store / "mine.txt").unlink()
    reproduce.prepare_store(cfg)  # now ours: it writes the marker
    rec = make_record(
        "train", train_config("digits_mlp", "srigl", 0.9, 0), train_metrics(90, "srigl")
    )
    ResultStore(store).write(rec)
    kept = reproduce.compose([*TINY, "resume=1", *_paths(tmp_path)])
    reproduce.prepare_store(kept)
    assert len(ResultStore(store).files()) == 1  # resume keeps the records
    reproduce.prepare_store(cfg)
    assert ResultStore(store).files() == []  # a fresh start clears them


def _git(*args: str) -> str:
    out = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True)
    if out.returncode != 0:
        pytest.skip(f"needs the git history (git {' '.join(args)}: {out.stderr.strip()})")
    return out.stdout.strip()


def test_resume_refuses_a_store_made_by_a_commit_with_other_training_code(tmp_path, caplog):
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    resume = reproduce.compose([*TINY, "resume=1", *_paths(tmp_path)])
    store = tmp_path / "store"
    marker = reproduce.prepare_store(cfg)
    head = _git("rev-parse", "HEAD")
    assert marker["commit"] == head
    reproduce.prepare_store(resume)  # the same commit: resumes
    # a fake marker: the parent of the last commit that changed srigl/
    last = _git("log", "-1", "--format=%H", "HEAD", "--", "srigl/")
    other = _git("rev-parse", f"{last}^")
    reproduce.write_marker(store, {**marker, "commit": other})
    with pytest.raises(reproduce.ReproduceError) as err:
        reproduce.prepare_store(resume)
    message = str(err.value)
    assert other[:12] in message and head[:12] in message and "srigl/" in message
    assert "\n" not in message
    # a marker older than the commit field: resumes, warning loudly
    reproduce.write_marker(store, {k: v for k, v in marker.items() if k != "commit"})
    caplog.set_level("WARNING")
    reproduce.prepare_store(resume)
    assert "cannot check" in caplog.text


def test_the_published_store_is_never_the_reproduction_store(tmp_path):
    argv = [*TINY, *_paths(tmp_path), f"store_dir={tmp_path / 'published'}"]
    with pytest.raises(reproduce.ReproduceError, match="published store"):
        reproduce.prepare_store(reproduce.compose(argv))


def test_publish_refuses_without_a_finished_reproduction(tmp_path):
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    with pytest.raises(reproduce.ReproduceError, match="no finished reproduction"):
        reproduce.publish(cfg)
    reproduce.prepare_store(cfg)  # started, not finished
    with pytest.raises(reproduce.ReproduceError, match="no finished reproduction"):
        reproduce.publish(cfg)
    assert not (tmp_path / "published").exists()


def _finished_store(cfg, records):
    reproduce.prepare_store(cfg)
    store = ResultStore(cfg.store_dir)
    paths = [store.write(r) for r in records]
    marker = reproduce.read_marker(Path(cfg.store_dir))
    reproduce.write_marker(Path(cfg.store_dir), {**marker, "finished": True})
    return paths


def test_publish_refuses_records_made_from_a_dirty_working_tree_naming_them(tmp_path):
    # issue 19 item 6: 224 of the 250 published training records came from a dirty tree
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    clean, dirty = _rec("rigl", 0.9, 0, 90.0), _rec("rigl", 0.9, 1, 91.0)
    clean["git"] = {"commit": "a" * 40, "dirty": False}
    dirty["git"] = {"commit": "a" * 40, "dirty": True}
    paths = _finished_store(cfg, [clean, dirty])
    with pytest.raises(reproduce.ReproduceError, match="dirty working tree") as err:
        reproduce.publish(cfg)
    message = str(err.value)
    assert paths[1].name in message and paths[0].name not in message and "\n" not in message
    assert not (tmp_path / "published").exists()  # nothing copied
    assert reproduce.main([*TINY, *_paths(tmp_path), "publish=1"]) == 2


def test_publish_replaces_a_published_run_id_keeping_the_old_record_and_counts_what_it_did(
    tmp_path, caplog
):
    # after a change of the training algorithm: the same run ids, other numbers
    caplog.set_level("INFO")
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    clean = {"commit": "a" * 40, "dirty": False}
    old, same = _rec("rigl", 0.9, 0, 90.0), _rec("rigl", 0.9, 1, 91.0)
    new, added = _rec("rigl", 0.9, 0, 92.0, state="t"), _rec("rigl", 0.9, 2, 93.0)
    for rec in (old, same, new, added):
        rec["git"] = clean
    assert new["run_id"] == old["run_id"] and new["metrics"] != old["metrics"]
    published = ResultStore(tmp_path / "published")
    old_path, same_path = published.write(old), published.write(same)
    old_bytes, same_bytes = old_path.read_bytes(), same_path.read_bytes()
    same_mtime = same_path.stat().st_mtime_ns
    _finished_store(cfg, [new, same, added])
    counts = reproduce.publish(cfg)
    assert counts == {"added": 1, "replaced": 1, "other_metrics": 1, "unchanged": 1}
    assert json.loads(old_path.read_text())["metrics"] == new["metrics"]  # replaced
    kept = list((tmp_path / "superseded").glob("*.json"))
    assert [p.read_bytes() for p in kept] == [old_bytes]  # the old one recoverable
    assert kept[0].name.startswith(old_path.stem + ".")
    assert same_path.read_bytes() == same_bytes and same_path.stat().st_mtime_ns == same_mtime
    assert len(published.files()) == 3
    assert (
        "1 added, 1 replaced (1 with other metrics" in caplog.text and "1 unchanged" in caplog.text
    )
    # publishing again: everything unchanged, nothing more kept
    assert reproduce.publish(cfg) == {
        "added": 0,
        "replaced": 0,
        "other_metrics": 0,
        "unchanged": 3,
    }
    assert len(list((tmp_path / "superseded").glob("*.json"))) == 1


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_publish_with_a_malformed_published_record_is_an_error_naming_it_and_writes_nothing(
    tmp_path,
):
    cfg = reproduce.compose([*TINY, *_paths(tmp_path)])
    clean = {"commit": "a" * 40, "dirty": False}
    old, new = _rec("rigl", 0.9, 0, 90.0), _rec("rigl", 0.9, 0, 92.0, state="t")
    added = _rec("rigl", 0.9, 2, 93.0)
    for rec in (old, new, added):
        rec["git"] = clean
    published = ResultStore(tmp_path / "published")
    published.write(old)
    bad = published.root / "train-0000malformed.json"
    bad.write_text('{"kind": "train", ')
    _finished_store(cfg, [new, added])
    before = {d: _tree(tmp_path / d) for d in ("published", "superseded", "report")}
    with pytest.raises(reproduce.ReproduceError, match="nothing published") as err:
        reproduce.publish(cfg)
    assert bad.name in str(err.value) and "\n" not in str(err.value)
    after = {d: _tree(tmp_path / d) for d in ("published", "superseded", "report")}
    assert after == before  # no record added or replaced, no superseded copy, no report


# --------------------------------------------------------------------------- the comparison


def _rec(method, sparsity, seed, top1, state="s", **extra):
    metrics = train_metrics(top1, method)
    metrics["hashes"] = {"state": f"{state}{seed}", "metrics": f"m{top1}"}
    return make_record(
        "train", train_config("digits_mlp", method, sparsity, seed, **extra), metrics
    )


OTHER = {"vendor": "GenuineIntel", "family": 6, "model": 143, "isa": "avx512", "cores": 8}


def _on(records: list[dict], **identity) -> list[dict]:
    """``records`` as if made on another machine: ``host`` with ``identity`` (its asv_name
    derived as suite.machine does), or without any identity (``old=True``: a record older than
    the machine identity, only the old host keys)."""
    out, old = [], identity.pop("old", False)
    for rec in records:
        rec = json.loads(json.dumps(rec))
        if old:
            keep = ("hostname", "platform", "cpu", "cpu_count", "threads", "gpu")
            rec["host"] = {k: v for k, v in rec["host"].items() if k in keep}
        else:
            rec["host"].update(identity)
            rec["host"]["asv_name"] = machine.asv_machine_name(rec["host"])
        out.append(rec)
    return out


HERE = machine.identity()["asv_name"]
THERE = machine.asv_machine_name(OTHER)


def test_verdicts_identical_within_noise_differs_and_not_published():
    # published on another machine class: within noise is the expectation
    published = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    published += [_rec("set", 0.9, s, 80.0 + s) for s in range(3)]
    published += [_rec("static", 0.9, s, 70.0 + s) for s in range(3)]
    published += [_rec("srigl", 0.9, s, 50.0, training={"epochs": 1}) for s in range(3)]
    published = _on(published, **OTHER)
    reproduced = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]  # bitwise the same
    reproduced += [_rec("set", 0.9, s, 80.5 + s, state="t") for s in range(3)]  # +0.5, sd 1
    reproduced += [_rec("static", 0.9, s, 75.0 + s, state="t") for s in range(3)]  # +5
    reproduced += [_rec("srigl", 0.9, s, 95.0) for s in range(3)]  # published: other settings
    cells = reproduce.compare_cells(published, reproduced).set_index("method")
    assert cells.loc["rigl", "verdict"] == "identical" and cells.loc["rigl", "bitwise"] == "3/3"
    assert cells.loc["set", "verdict"] == "within noise"  # 0.5 <= 2 * sqrt(1/3 + 1/3)
    assert cells.loc["set", "bitwise"] == "0/3"
    assert cells.loc["static", "verdict"] == "differs"  # 5 > 2 * 0.816
    assert cells.loc["srigl", "verdict"] == "not published"  # a 1-epoch cell never stands in
    assert "training.epochs=1" in cells.loc["srigl", "note"]
    assert cells.loc["rigl", "published"] == "91.00 ± 1.00 (n=3)"
    assert set(cells["machine"].drop("srigl")) == {f"other class ({THERE})"}
    outcome = reproduce.Outcome(cells=cells.reset_index(), bench=pd.DataFrame(), machine=HERE)
    assert outcome.last_line() == "reproduced 2/3 cells (1 bitwise identical)"
    assert outcome.headline() == (
        f"other machine class: published on {THERE}, reproduced on {HERE}: within noise is the "
        "expectation: 2/3 cells within noise (1 bitwise identical)"
    )
    assert not outcome.ok  # a cell differs: exit status 1


def test_seeds_whose_hashes_lack_the_state_or_metrics_hash_are_never_bitwise_identical():
    published = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    reproduced = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    for rec in published + reproduced:
        rec["metrics"]["hashes"] = {}  # a hashes mapping without the keys
    cell = reproduce.compare_cells(published, reproduced).iloc[0]
    # nothing to compare: not identical, and no hash difference to investigate either
    assert (cell["bitwise"], cell["verdict"], cell["investigate"]) == ("0/3", "within noise", "")


# --------------------------------------------------------------------------- the machines


def _outcome(published: list[dict], reproduced: list[dict]) -> reproduce.Outcome:
    cells = reproduce.compare_cells(published, reproduced)
    return reproduce.Outcome(cells=cells, bench=pd.DataFrame(), machine=HERE)


def test_the_same_machine_class_and_identical_hashes_is_identical():
    published = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    outcome = _outcome(published, [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)])
    cell = outcome.cells.iloc[0]
    assert (cell["verdict"], cell["machine"], cell["investigate"]) == (
        "identical",
        "same class",
        "",
    )
    assert outcome.headline() == f"same machine class ({HERE}): 1/1 cells bitwise identical"
    assert outcome.ok


def test_the_same_machine_class_and_a_changed_hash_is_a_difference_to_investigate():
    published = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    published += [_rec("set", 0.9, s, 80.0 + s) for s in range(3)]
    reproduced = [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)]
    reproduced += [_rec("set", 0.9, s, 80.0 + s) for s in (0, 2)]
    reproduced += [_rec("set", 0.9, 1, 81.0, state="t")]  # seed 1: same accuracy, other weights
    outcome = _outcome(published, reproduced)
    cells = outcome.cells.set_index("method")
    assert cells.loc["set", "verdict"] == "not bitwise" and cells.loc["set", "bitwise"] == "2/3"
    assert cells.loc["set", "investigate"] == "1" and cells.loc["set", "n_investigate"] == 1
    assert "seed(s) 1 not bitwise identical on the same machine class" in cells.loc["set", "note"]
    assert outcome.headline() == (
        f"same machine class ({HERE}): 1/2 cells bitwise identical, 1 not bitwise (a difference "
        "to investigate)"
    )
    assert outcome.last_line() == (
        "reproduced 2/2 cells (1 bitwise identical, 1 not bitwise: to investigate)"
    )
    assert outcome.ok  # listed, not a failure; a difference beyond noise still differs:
    far = [_rec("set", 0.9, s, 70.0 + s, state="t") for s in range(3)]
    assert _outcome(published, far).cells.iloc[0]["verdict"] == "differs"


def test_another_machine_class_expects_within_noise_and_names_both_classes():
    published = _on([_rec("set", 0.9, s, 80.0 + s) for s in range(3)], **OTHER)
    outcome = _outcome(published, [_rec("set", 0.9, s, 80.5 + s, state="t") for s in range(3)])
    cell = outcome.cells.iloc[0]
    assert cell["verdict"] == "within noise" and cell["n_investigate"] == 0
    assert cell["machine"] == f"other class ({THERE})"
    assert THERE in outcome.headline() and HERE in outcome.headline()
    assert "within noise is the expectation" in outcome.headline()


def test_records_without_a_machine_identity_are_of_unknown_class():
    published = _on([_rec("set", 0.9, s, 80.0 + s) for s in range(3)], old=True)
    assert reproduce.machine_class(published[0]["host"]) is None
    outcome = _outcome(published, [_rec("set", 0.9, s, 80.5 + s, state="t") for s in range(3)])
    cell = outcome.cells.iloc[0]
    assert (cell["verdict"], cell["machine"]) == ("within noise", "unknown class")
    assert outcome.headline().startswith(
        "machine class of the published records unknown (recorded before the machine identity), "
        f"this machine {HERE}: within noise is the expectation"
    )


def test_a_cell_published_from_several_machine_classes_says_so():
    published = [_rec("set", 0.9, 0, 80.0)] + _on([_rec("set", 0.9, 1, 81.0)], **OTHER)
    published += _on([_rec("set", 0.9, 2, 82.0)], old=True)
    reproduced = [_rec("set", 0.9, s, 80.0 + s, state="t") for s in range(3)]
    outcome = _outcome(published, reproduced)
    cell = outcome.cells.iloc[0]
    assert cell["machine"] == f"mixed: {HERE} (1), {THERE} (1), unknown (1)"
    assert "several machine classes" in cell["note"]
    assert cell["investigate"] == "0"  # only the seed published from this class is expected bitwise
    assert cell["verdict"] == "not bitwise"
    assert outcome.headline().startswith("published records from several machine classes (")


def test_the_same_machine_class_is_decided_by_same_class_not_by_the_class_name():
    # published on this machine class under another asv_name (e.g. an older naming scheme)
    published = _on([_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)])
    for rec in published:
        rec["host"]["asv_name"] = "legacy-name-of-this-machine"
    outcome = _outcome(published, [_rec("rigl", 0.9, s, 90.0 + s) for s in range(3)])
    assert outcome.cells.iloc[0]["machine"] == "same class"
    assert outcome.headline() == f"same machine class ({HERE}): 1/1 cells bitwise identical"


def test_a_cell_whose_seeds_relate_to_their_published_runs_in_several_ways_is_mixed():
    # one published class; the reproduction's seed 2 ran on another machine class
    published = [_rec("set", 0.9, s, 80.0 + s) for s in range(3)]
    reproduced = [_rec("set", 0.9, s, 80.0 + s) for s in (0, 1)]
    reproduced += _on([_rec("set", 0.9, 2, 82.0, state="t")], **OTHER)
    outcome = _outcome(published, reproduced)
    cell = outcome.cells.iloc[0]
    assert cell["machine"] == "mixed: other class (1), same class (2)"
    assert cell["investigate"] == ""  # seed 2 is expected within noise only
    assert outcome.headline().startswith("mixed machine relations (other class (1 seeds), ")


def test_a_profile_with_fewer_seeds_is_compared_with_the_published_runs_of_those_seeds():
    # published seeds 0..4 spread widely; the reproduction has seed 0 only, 0.5 below it
    published = [_rec("set", 0.9, s, v) for s, v in enumerate([90.0, 94.0, 95.0, 96.0, 97.0])]
    published = _on(published, **OTHER)  # within noise expected
    reproduced = [_rec("set", 0.9, 0, 89.5, state="t")]
    cell = reproduce.compare_cells(published, reproduced).iloc[0]
    assert cell["published, same seeds"] == "90.00" and cell["difference"] == "-0.50"
    assert cell["verdict"] == "within noise"  # vs the cell mean 94.4 it would be -4.9
    far = reproduce.compare_cells(published, [_rec("set", 0.9, 0, 80.0, state="t")]).iloc[0]
    assert far["verdict"] == "differs"


def test_the_standard_error_of_one_seed_borrows_the_other_sides_spread():
    assert reproduce.difference_se(1.0, 4, float("nan"), 1) == pytest.approx((1 / 4 + 1) ** 0.5)
    assert math.isnan(reproduce.difference_se(float("nan"), 1, float("nan"), 1))  # unknown
    assert reproduce.verdict(0.0, float("nan"), 0, 1) == "within noise"
    assert reproduce.verdict(0.1, float("nan"), 0, 1) == "differs"


def _bench(speedup_fused: float, whole_speedup: float) -> dict:
    rows = [
        bench_row("dense", 0.9, 1, 2e-4),
        bench_row("fused", 0.9, 1, 2e-4 / speedup_fused),
    ]
    whole = [whole_model_row(0.03 / whole_speedup, 0.03, structured=False)]
    return make_record(
        "bench", {"profile": {"name": "quick"}}, {"rows": rows, "whole_model": whole}
    )


def test_bench_ratios_beyond_the_tolerance_are_reported_as_moved_and_never_fail():
    table = reproduce.compare_bench([_bench(4.0, 2.0)], [_bench(2.0, 2.2)], tolerance=0.5)
    fused = table[(table["kind"] == "layer") & (table["backend"] == "fused")].iloc[0]
    assert fused["factor"] == pytest.approx(0.5) and fused["status"] == "moved"
    whole = table[table["kind"] == "whole model"].iloc[0]
    assert whole["status"] == "within tolerance" and whole["factor"] == pytest.approx(1.1)
    outcome = reproduce.Outcome(cells=pd.DataFrame(), bench=table)
    assert outcome.ok  # timings never fail a reproduction
    summary = reproduce.bench_summary(table)
    assert int(summary[summary["backend"] == "fused"]["moved"].sum()) == 1


# --------------------------------------------------------------------------- end to end


def test_a_failed_sweep_still_compares_and_exits_1(tmp_path, monkeypatch, caplog):
    caplog.set_level("INFO")
    monkeypatch.setattr(reproduce.app, "run_sweep", lambda cfg: 1)
    assert reproduce.main([*TINY, *_paths(tmp_path)]) == 1
    assert "FAILED train sweep exited with status 1" in caplog.text
    assert (tmp_path / "REPRODUCTION.md").is_file()
    assert caplog.records[-1].getMessage() == "reproduced 0/0 cells (0 bitwise identical)"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in ResultStore(folder).files()}


def test_a_tiny_reproduction_is_bitwise_identical_resumes_and_flags_a_changed_cell(
    tmp_path, caplog
):
    caplog.set_level("INFO")
    from suite import train

    # the published records: the same two jobs, trained in process
    for method, sp in (("dense", 0.0), ("srigl", 0.9)):
        cfg = train.compose(
            ["experiment=digits_mlp", f"trainer={method}", f"sparsity={sp}", "seed=0"]
            + ["progress=false", "training.epochs=2", "limit_batches=4", "trainer.delta_t=2"]
            + [f"results_dir={tmp_path / 'published'}", f"checkpoint_dir={tmp_path / 'ck0'}"]
        )
        train.run(cfg)
    published = _files(tmp_path / "published")
    argv = [*TINY, *_paths(tmp_path)]
    assert reproduce.main(argv) == 0, caplog.text
    assert caplog.records[-1].getMessage() == "reproduced 2/2 cells (2 bitwise identical)"
    assert _files(tmp_path / "published") == published  # reproduce never writes there
    text = (tmp_path / "REPRODUCTION.md").read_text()
    assert text.rstrip().endswith("reproduced 2/2 cells (2 bitwise identical)")
    assert "| identical" in text and (tmp_path / "figures" / "reproduction.png").is_file()
    # trained here and published here: the same machine class, bitwise identity expected
    headline = f"same machine class ({HERE}): 2/2 cells bitwise identical"
    assert caplog.records[-2].getMessage() == headline and f"**Machines: {headline}.**" in text
    assert re.search(rf"\| this run +\| {HERE} +\|", text)
    assert re.search(rf"\| published +\| {HERE} +\| 2 +\|", text)
    reproduced = _files(tmp_path / "store")
    assert len(reproduced) == 2

    # resume=1 on a finished reproduction: every job is skipped, nothing retrained
    caplog.clear()
    assert reproduce.main([*argv, "resume=1"]) == 0
    assert _files(tmp_path / "store") == reproduced

    # a published cell that does not come back: exit 1, the cell named
    path = next((tmp_path / "published").glob("train-*.json"))
    rec = json.loads(path.read_text())
    rec["metrics"]["top1_accuracy"] -= 30.0
    rec["metrics"]["hashes"]["metrics"] = "0" * 64
    path.write_text(json.dumps(rec))
    caplog.clear()
    assert reproduce.main([*argv, "resume=1"]) == 1
    assert "DIFFERS digits_mlp" in caplog.text
    assert caplog.records[-1].getMessage() == "reproduced 1/2 cells (1 bitwise identical)"

    # publish copies the reproduction back and regenerates the report (the records made as
    # if from a clean working tree: a dirty one is refused, see the test above)
    for path in (tmp_path / "store").glob("train-*.json"):
        rec = json.loads(path.read_text())
        rec["git"]["dirty"] = False
        path.write_text(json.dumps(rec))
    reproduced = _files(tmp_path / "store")
    caplog.clear()
    assert reproduce.main([*argv, "publish=1"]) == 0
    assert _files(tmp_path / "published") == reproduced
    assert (tmp_path / "report" / "REPORT.md").is_file()
