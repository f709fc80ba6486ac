"""asv: the config, the benchmark suite's shape, and the history/summary plumbing."""

from __future__ import annotations

import importlib
import inspect
import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from suite import asv_tools
from suite.asv_benchmarks import _common, bench_backends

ROOT = asv_tools.REPO_ROOT
BENCH_MODULES = ["bench_backends", "bench_models", "bench_training"]
PREFIXES = ("time_", "track_", "peakmem_", "mem_", "timeraw_")


def _benchmark_classes():
    for mod_name in BENCH_MODULES:
        module = importlib.import_module(f"suite.asv_benchmarks.{mod_name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and not name.startswith("_") and _methods(obj):
                yield f"{mod_name}.{name}", obj


def _methods(cls):
    return [m for m in dir(cls) if m.startswith(PREFIXES)]


CLASSES = dict(_benchmark_classes())


# --------------------------------------------------------------------------- the config


def test_asv_conf_is_plain_json_that_asv_reads():
    raw = json.loads((ROOT / "asv.conf.json").read_text())
    assert raw["version"] == 1
    assert asv_tools.load_config(ROOT / "asv.conf.json")["repo"] == raw["repo"]


def test_asv_conf_is_asv_readable_and_points_at_the_project_layout():
    conf = asv_tools.load_config(ROOT / "asv.conf.json")  # checks asv's api version 1
    assert conf["branches"] == ["main"]
    assert conf["environment_type"] == "existing"
    assert (ROOT / conf["repo"]).resolve() == ROOT
    assert (ROOT / conf["benchmark_dir"] / "__init__.py").is_file()
    assert conf["results_dir"] == "results/asv"
    assert conf["html_dir"].startswith(conf["results_dir"])


def test_asv_html_is_gitignored_but_results_are_not():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "results/asv/html/" in ignored
    assert not any(line.rstrip("/") in ("results", "results/asv") for line in ignored)


# --------------------------------------------------------------------------- the suite


def test_every_benchmark_module_defines_benchmark_classes():
    modules = {name.split(".")[0] for name in CLASSES}
    assert modules == set(BENCH_MODULES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_benchmark_class_pins_its_version_and_names_each_parameter(name):
    cls = CLASSES[name]
    assert isinstance(cls.version, str) and cls.version, f"{name}: pin `version`"
    params = getattr(cls, "params", None)
    if params is None:
        return
    assert len(params) == len(cls.param_names), f"{name}: params vs param_names"
    for values in params:
        assert len(values) == len(set(map(repr, values))), f"{name}: duplicate values"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_benchmark_methods_take_the_cache_and_parameters_asv_passes(name):
    cls = CLASSES[name]
    n_params = len(getattr(cls, "param_names", []))
    n_cache = 1 if hasattr(cls, "setup_cache") else 0
    for method in [*_methods(cls), "setup"]:
        if not hasattr(cls, method):
            continue
        sig = inspect.signature(getattr(cls, method))
        assert len(sig.parameters) == 1 + n_cache + n_params, f"{name}.{method}{sig}"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_track_benchmarks_declare_a_unit_and_lower_is_better_quantities(name):
    cls = CLASSES[name]
    for method in _methods(cls):
        if method.startswith("track_"):
            unit = getattr(getattr(cls, method), "unit", None)
            assert unit in ("ratio", "%"), f"{name}.{method}: unit {unit!r}"
            assert "accuracy" not in method and "speedup" not in method


def test_layer_grid_covers_vit_and_resnet_shapes_sparsities_and_batches():
    _, shapes, sparsities, batches = bench_backends.LayerForward.params
    dims = {bench_backends.SHAPES[s] for s in shapes}
    assert dims == {(768, 3072), (3072, 768), (2048, 1000)}
    assert sparsities == [0.9, 0.99] and batches == [1, 256]


def test_ratio_benchmark_covers_every_backend_but_its_dense_baseline():
    backends_all = bench_backends.LayerForward.params[0]
    assert "dense" in backends_all
    assert bench_backends.LayerRatio.params[0] == [b for b in backends_all if b != "dense"]
    assert bench_backends.LayerRatio.params[1:] == bench_backends.LayerForward.params[1:]


@pytest.mark.parametrize("shape,sparsity", [((768, 3072), 0.9), ((3072, 768), 0.99)])
def test_benchmark_layers_have_the_constant_fan_in_of_the_spec(shape, sparsity):
    in_f, out_f = shape
    weight, mask, bias = _common.constant_fan_in_layer(in_f, out_f, sparsity)
    k = int(out_f * in_f * (1 - sparsity)) // out_f
    assert weight.shape == mask.shape == (out_f, in_f) and bias.shape == (out_f,)
    assert mask.dtype == torch.bool
    assert torch.all(mask.sum(dim=1) == k)


def test_ratio_of_a_four_times_slower_module_is_about_four():
    def module(delay):
        return lambda x: time.sleep(delay)

    ratio = bench_backends.best_time_ratio(module(0.004), module(0.001), None, 0.05)
    assert 2.5 < ratio < 6.0


def test_unavailable_backend_is_an_asv_skip_naming_the_reason():
    with pytest.raises(NotImplementedError, match="not-a-backend"):
        _common.require("backends", "not-a-backend")


def test_missing_profile_is_an_asv_skip_listing_the_known_profiles():
    with pytest.raises(NotImplementedError, match="quick"):
        _common.load_profile("no-such-profile")


def test_quick_profile_sizes_the_accuracy_runs():
    assert int(_common.asv_setting("train_epochs", None, name="quick")) > 0


# --------------------------------------------------------------------------- checkout isolation


def test_benchmarks_import_the_project_of_their_own_checkout():
    where = asv_tools.verify_imports(ROOT)
    assert set(where) == {"asv_benchmarks", "backends", "srigl", "suite"}
    assert all(Path(p).is_relative_to(ROOT) for p in where.values())


def test_benchmarks_of_another_checkout_import_that_checkouts_packages(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "suite" / "asv_benchmarks", tree / "suite" / "asv_benchmarks")
    for pkg in ("backends", "srigl", "suite"):
        (tree / pkg).mkdir(exist_ok=True)
        (tree / pkg / "__init__.py").write_text("")
    where = asv_tools.verify_imports(tree)
    assert where == {
        "asv_benchmarks": str(tree / "suite" / "asv_benchmarks"),
        "backends": str(tree / "backends"),
        "srigl": str(tree / "srigl"),
        "suite": str(tree / "suite"),
    }


def test_history_config_keeps_worktree_benchmarks_and_main_results(tmp_path):
    shutil.copy(ROOT / "asv.conf.json", tmp_path / "asv.conf.json")
    conf = asv_tools.load_config(asv_tools.history_config(tmp_path))
    assert conf["benchmark_dir"] == str(tmp_path / "suite" / "asv_benchmarks")  # the worktree's
    assert conf["results_dir"] == str(ROOT / "results" / "asv")
    assert conf["repo"] == str(ROOT)


def _git(repo, *args):
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_history_skips_a_commit_without_benchmarks_and_removes_its_worktree(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("before the benchmarks\n")
    _git(repo, "add", "README.md")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    sha = _git(repo, "rev-parse", "HEAD")
    status = asv_tools.record_commit(sha, root=repo)
    assert status.startswith("skipped: no asv.conf.json")
    assert len(_git(repo, "worktree", "list").splitlines()) == 1


def test_history_rejects_a_non_positive_commit_count():
    with pytest.raises(ValueError, match="0"):
        asv_tools.history(0)


# --------------------------------------------------------------------------- summary


@pytest.mark.parametrize(
    "value,unit,text",
    [
        (0.000123, "seconds", "123 us"),
        (0.0042, "seconds", "4.2 ms"),
        (1.5, "seconds", "1.5 s"),
        (3 * 2**20, "bytes", "3 MiB"),
        (4.25, "%", "4.25%"),
        (0.431, "ratio", "0.431"),
        (math.nan, "ratio", "n/a"),
    ],
)
def test_summary_formats_values_by_unit(value, unit, text):
    assert asv_tools.format_value(value, unit) == text


def test_summary_writes_a_benchmark_by_commit_table_and_a_png(tmp_path):
    bench = "bench_training.DigitsAccuracy.track_top1_error"
    rows = [
        {"commit": c, "date": d, "benchmark": bench, "params": p, "value": v, "unit": "%"}
        for c, d, v in (("a" * 40, 1, 5.0), ("b" * 40, 2, 4.0))
        for p in ("srigl, 0.9", "rigl, 0.9")
    ]
    dense = {**rows[0], "params": "dense, 0.9", "value": 3.0}
    rows += [dense, {**dense, "commit": "b" * 40, "date": 2, "value": None}]
    rows.append({**rows[0], "params": "set, 0.9", "value": None})  # never measured: left out
    md, png = tmp_path / "ASV.md", tmp_path / "fig" / "h.png"
    asv_tools.write_summary(rows, md, png)
    text = md.read_text()
    assert "| benchmark (params) | aaaaaaaa | bbbbbbbb |" in text
    assert "| training.DigitsAccuracy.track_top1_error (srigl, 0.9) | 5.00% | 4.00% |" in text
    assert "(dense, 0.9) | 3.00% | n/a |" in text
    assert "set, 0.9" not in text
    assert png.stat().st_size > 10_000


def test_summary_without_results_says_how_to_get_them(tmp_path):
    with pytest.raises(ValueError, match="make asv"):
        asv_tools.write_summary([], tmp_path / "a.md", tmp_path / "a.png")


# --------------------------------------------------------------------------- asv itself


@pytest.mark.slow
def test_asv_check_passes():
    assert asv_tools.main(["check"]) == 0


@pytest.mark.slow
def test_asv_run_records_results_that_the_summary_reads(tmp_path):
    bench = r"TrainingStep\.time_step\('(dense|srigl)'\)"
    cmd = [sys.executable, "-m", "suite.asv_tools", "--results-dir", str(tmp_path)]
    assert subprocess.run([*cmd, "run", "--bench", bench], cwd=ROOT).returncode == 0
    rows = asv_tools.load_results(results_dir=tmp_path)
    measured = {r["params"]: r["value"] for r in rows if not math.isnan(r["value"])}
    assert set(measured) == {"dense", "srigl"}
    assert all(0 < v < 1 for v in measured.values())  # seconds per digits-MLP step
    assert {r["unit"] for r in rows} == {"seconds"}
