"""The asv benchmark suite's shape (what asv discovers and passes) and its helpers."""

from __future__ import annotations

import importlib
import inspect
import itertools
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

import suite
from suite.asv_benchmarks import _common, bench_backends

ROOT = Path(__file__).resolve().parents[3]
BENCH_MODULES = ["bench_backends", "bench_counts", "bench_models", "bench_training"]
PREFIXES = ("time_", "track_", "peakmem_", "mem_", "timeraw_")


def _benchmark_classes():
    for mod_name in BENCH_MODULES:
        module = importlib.import_module(f"suite.asv_benchmarks.{mod_name}")
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and not name.startswith("_") and methods(obj):
                yield f"{mod_name}.{name}", obj


def methods(cls: type) -> list[str]:
    """The benchmark methods of ``cls`` (asv's name prefixes)."""
    return [m for m in dir(cls) if m.startswith(PREFIXES)]


CLASSES = dict(_benchmark_classes())


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
    for method in [*methods(cls), "setup"]:
        if not hasattr(cls, method):
            continue
        sig = inspect.signature(getattr(cls, method))
        assert len(sig.parameters) == 1 + n_cache + n_params, f"{name}.{method}{sig}"


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_track_benchmarks_declare_a_unit_and_lower_is_better_quantities(name):
    cls = CLASSES[name]
    for method in methods(cls):
        if method.startswith("track_"):
            unit = getattr(getattr(cls, method), "unit", None)
            assert unit in ("ratio", "%", "instructions"), f"{name}.{method}: unit {unit!r}"
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


def test_the_ratio_is_the_layers_time_over_the_baselines_from_one_paired_run(monkeypatch):
    """No timing in a unit test: the one paired timer is replaced by one that calls each
    function once and reports a fixed speed-up; the tracked ratio is its inverse (asv flags
    increases, so it tracks the number that should go down)."""
    import backends.timing as timing

    seen = []

    def fake_paired_ratio(candidate, baseline, *, pairs, block_seconds, threads):
        assert threads == bench_backends.THREADS and pairs == 10 and block_seconds > 0
        candidate(), baseline()
        return types.SimpleNamespace(speedup=0.25)

    monkeypatch.setattr(timing, "paired_ratio", fake_paired_ratio)
    layer, baseline = (lambda x: seen.append(("layer", x))), (lambda x: seen.append(("base", x)))
    assert bench_backends.best_time_ratio(layer, baseline, "x", 0.05) == 4.0
    assert sorted(seen) == [("base", "x"), ("layer", "x")]


def test_unavailable_backend_is_an_asv_skip_naming_the_reason():
    with pytest.raises(NotImplementedError, match="not-a-backend"):
        _common.require("backends", "not-a-backend")


def test_missing_profile_is_an_asv_skip_listing_the_known_profiles():
    with pytest.raises(NotImplementedError, match="quick"):
        _common.load_profile("no-such-profile")


def test_quick_profile_sizes_the_accuracy_runs():
    assert int(_common.asv_setting("train_epochs", None, name="quick")) > 0


def selection_names() -> list[str]:
    """Every ``name(param, ...)`` string that asv matches ``--bench`` regexes against (its
    discovery joins the ``repr`` of each parameter combination)."""
    names = []
    for cls_name, cls in CLASSES.items():
        params = getattr(cls, "params", None)
        for method in methods(cls):
            name = f"{cls_name}.{method}"
            if params is None:
                names.append(name)
                continue
            names += [f"{name}({', '.join(map(repr, c))})" for c in itertools.product(*params)]
    return names


def test_profile_comes_from_the_installed_suite_package_not_a_checkout(tmp_path):
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "tiny.yaml").write_text("asv:\n  train_epochs: 3\n")
    assert _common.load_profile("tiny", conf_dir=tmp_path) == {"asv": {"train_epochs": 3}}
    installed = Path(suite.__file__).parent / "conf" / "profile" / "quick.yaml"
    assert installed.is_file()
    assert _common.load_profile("quick") == _common.load_profile("quick", installed.parents[1])


def test_importing_the_suite_as_asv_does_leaves_sys_path_alone():
    probe = (
        "import sys; before = list(sys.path)\n"
        "from asv_runner._aux import update_sys_path\n"
        f"update_sys_path({str(ROOT / 'suite' / 'asv_benchmarks')!r})\n"
        "import asv_benchmarks, asv_benchmarks.bench_backends, asv_benchmarks.bench_models\n"
        "import asv_benchmarks.bench_training, asv_benchmarks.bench_counts\n"
        "assert sys.path == before, set(sys.path) ^ set(before)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
