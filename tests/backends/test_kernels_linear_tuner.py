"""The fused kernel's autotuner: its per-machine cache (write, reuse, corrupt file, another
machine's file), ``SRIGL_TUNE=off`` and ``backends.tune`` over a model."""

from __future__ import annotations

import json

import pytest
import torch
from backend_cases import CASES, constant_fan_in_layer
from pool_states import auto_onto_pool, late_pool_job, start_pool_helper
from torch import nn

import backends
from backends.kernels import linear_tuner as tuner
from backends.kernels import ops, tune_cache

pytestmark = pytest.mark.skipif(not ops.available()[0], reason=f"C++: {ops.available()[1]}")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A fresh tuning cache folder (the built kernel stays loaded in this process)."""
    ops.load()
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    tuner.forget_memory()
    yield tmp_path
    tuner.forget_memory()


def _layer(seed=0):
    weight, mask, bias = constant_fan_in_layer(CASES[7], seed)
    return backends.create("fused", weight, mask, bias)


def test_tuning_writes_the_winner_per_bucket_into_the_machine_cache(cache):
    layer = _layer()
    chosen = layer.tune([1, 197], threads=2)
    path = tuner.cache_path(2)
    assert path.is_relative_to(cache) and path.is_file()
    data = json.loads(path.read_text())
    assert data["machine"] == tuner.machine_key(2) and data["schema"] == tuner.SCHEMA
    keys = {tuner.layer_key(layer, tuner.bucket_of(b)) for b in (1, 197)}
    assert keys <= set(data["entries"])
    for batch in (1, 197):
        entry = data["entries"][tuner.layer_key(layer, tuner.bucket_of(batch))]
        assert chosen[batch] == layer.variant_for(batch, threads=2)
        assert min(entry["fastest_us"], key=entry["fastest_us"].get) == chosen[batch]


def test_a_cached_winner_is_reused_without_timing(cache, monkeypatch):
    first = _layer()
    chosen = first.tune([4], threads=2)
    monkeypatch.setattr(tuner, "measure", lambda *a, **k: pytest.fail("timed again"))
    tuner.forget_memory()  # as a new process would: read the file
    second = _layer()
    assert second.tune([4], threads=2) == chosen
    x = torch.randn(4, CASES[7].in_features)
    torch.set_num_threads(2)
    second(x)  # first use of the bucket: from the cache, no timing


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"schema": 999, "entries": {}}), json.dumps([1, 2])]
)
def test_a_corrupt_cache_file_is_ignored_with_a_warning_and_rebuilt(cache, content):
    path = tuner.cache_path(2)
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.warns(tuner.TuneCacheWarning, match="ignoring the fused-kernel tuning cache"):
        _layer().tune([1], threads=2)
    data = json.loads(path.read_text())
    assert data["schema"] == tuner.SCHEMA and len(data["entries"]) == 1


def test_another_machines_cache_is_not_used(cache, monkeypatch):
    layer = _layer()
    path = tuner.cache_path(2)
    path.parent.mkdir(parents=True)
    foreign = dict(tuner.machine_key(2), cpu="Some Other CPU")
    key = tuner.layer_key(layer, 0)
    bogus = {key: {"variant": 1, "geometry": [], "batch": 1, "fastest_us": {}}}
    path.write_text(json.dumps({"schema": tuner.SCHEMA, "machine": foreign, "entries": bogus}))
    timed = []
    real = tuner.measure
    monkeypatch.setattr(tuner, "measure", lambda *a: timed.append(1) or real(*a))
    with pytest.warns(tuner.TuneCacheWarning, match="Some Other CPU"):
        layer.tune([1], threads=2)
    assert timed  # timed here, not taken from the foreign file
    assert json.loads(path.read_text())["machine"] == tuner.machine_key(2)


def test_tune_off_times_nothing_and_the_static_rule_runs(cache, monkeypatch):
    monkeypatch.setenv("SRIGL_TUNE", "off")
    tuner.refresh()
    try:
        monkeypatch.setattr(tuner, "measure", lambda *a, **k: pytest.fail("timed"))
        layer = _layer()
        layer(torch.randn(2, CASES[7].in_features))
        assert not tuner.cache_path(torch.get_num_threads()).exists()
    finally:
        monkeypatch.delenv("SRIGL_TUNE")
        tuner.refresh()


def test_backends_tune_covers_every_fused_layer_of_a_model(cache):
    model = nn.Sequential(_layer(0), nn.ReLU(), nn.Sequential(_layer(1)))
    model[2][0].layer_name = "inner"
    result = backends.tune(model, batches=[1, 256], threads=1)
    assert set(result) == {"0", "2.0"}
    for name, per_batch in result.items():
        assert set(per_batch) == {1, 256}
        layer = model.get_submodule(name)
        assert per_batch == {b: layer.variant_for(b, threads=1) for b in (1, 256)}


def test_buckets_are_powers_of_two():
    assert [tuner.bucket_of(b) for b in (0, 1, 2, 3, 4, 5, 8, 9, 197, 256, 257, 10**6)] == [
        0,
        0,
        1,
        2,
        2,
        3,
        3,
        4,
        8,
        8,
        9,
        10,
    ]


def test_a_winner_timed_on_a_loaded_machine_is_timed_again_when_quiet(cache, monkeypatch):
    layer = _layer()
    layer.tune([1], threads=2)
    path = tuner.cache_path(2)
    data = json.loads(path.read_text())
    key = tuner.layer_key(layer, 0)
    cores = __import__("os").cpu_count()
    data["entries"][key]["load_avg_1m"] = 4.0 * cores  # timed while very busy
    path.write_text(json.dumps(data))
    tuner.forget_memory()
    timed = []
    real = tuner.measure
    monkeypatch.setattr(tuner, "measure", lambda *a: timed.append(1) or real(*a))
    monkeypatch.setattr(tune_cache, "load_average", lambda: 0.0)  # quiet now
    _layer().tune([1], threads=2)
    assert timed
    monkeypatch.setattr(tune_cache, "load_average", lambda: 4.0 * cores)  # still busy: keep it
    tuner.forget_memory()
    timed.clear()
    data["entries"][key]["load_avg_1m"] = 4.0 * cores
    path.write_text(json.dumps(data))
    _layer().tune([1], threads=2)
    assert not timed


def test_a_winner_timed_while_the_host_withheld_a_core_is_timed_again_when_it_gives_it(
    cache, monkeypatch
):
    monkeypatch.setattr(tune_cache, "_cores_given", {})
    monkeypatch.setattr(tune_cache, "core_scaling", lambda threads: 1.0)  # one core of two
    layer = _layer()
    layer.tune([1], threads=2)
    path = tuner.cache_path(2)
    key = tuner.layer_key(layer, 0)
    assert json.loads(path.read_text())["entries"][key]["cores_given"] == 1.0
    tuner.forget_memory()
    timed = []
    real = tuner.measure
    monkeypatch.setattr(tuner, "measure", lambda *a: timed.append(1) or real(*a))
    _layer().tune([1], threads=2)  # the host still withholds it: the winner stays
    assert not timed
    monkeypatch.setattr(tune_cache, "_cores_given", {})
    monkeypatch.setattr(tune_cache, "core_scaling", lambda threads: 1.95)  # both cores now
    tuner.forget_memory()
    _layer().tune([1], threads=2)
    assert timed and json.loads(path.read_text())["entries"][key]["cores_given"] == 1.95


def _write_entries(path, entries: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": tuner.SCHEMA, "machine": tuner.machine_key(2), "entries": entries}
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],  # a list: AttributeError in _tuned_under_load before
        {"variant": 1101, "geometry": [99, 99], "batch": 1},  # RuntimeError from fused_pack
        {"variant": 9999, "geometry": [], "batch": 1},
        {"variant": "abc", "geometry": [], "batch": 1},
        {"variant": 1, "geometry": [], "windows": 3, "batch": 1},
        {"variant": 1, "geometry": [], "windows": True, "batch": 1},
    ],
    ids=[
        "list",
        "geometry_out_of_range",
        "variant_out_of_range",
        "variant_not_an_int",
        "windows_out_of_range",
        "windows_a_bool",
    ],
)
def test_a_bad_cache_entry_is_dropped_with_one_warning_timed_again_and_written_back(cache, bad):
    layer = _layer()
    path = tuner.cache_path(2)
    key = tuner.layer_key(layer, 0)
    _write_entries(path, {key: bad})
    with pytest.warns(tuner.TuneCacheWarning, match=f"dropping the fused-kernel .*{key}") as rec:
        assert set(layer.tune([1], threads=2)) == {1}
    assert len([w for w in rec if key in str(w.message)]) == 1
    entry = json.loads(path.read_text())["entries"][key]
    assert tuner.check_entry(entry) is None and entry != bad
    layer(torch.randn(1, CASES[7].in_features))  # and forward runs


def test_an_entry_that_does_not_run_here_is_dropped_when_installed_and_timed_again(
    cache, monkeypatch
):
    layer = _layer()
    path = tuner.cache_path(2)
    key = tuner.layer_key(layer, 0)
    # a well-formed entry this CPU cannot run: an ISA level above its own, or (on AVX-512)
    # the AVX-512 permute kernel with the AVX2 pack geometry (its lanes are 16, not 8)
    isa = int(ops.load().fused_isa())
    if isa == 0:
        pytest.skip("the generic level runs every pack geometry")
    code = ops.encode("avx512", "perm") if isa == 2 else ops.encode("avx512", "rows")
    geometry = [8, 8] if isa == 2 else []
    _write_entries(path, {key: {"variant": code, "geometry": geometry, "batch": 1}})
    with pytest.warns(tuner.TuneCacheWarning, match="does not run here"):
        layer.tune([1], threads=2)
    assert json.loads(path.read_text())["entries"][key]["variant"] != code
    assert layer.perm_geometry != (8, 8) or isa == 1  # the bad entry left the layer as it was


def _nm_layer(n: int = 2, m: int = 4, in_f: int = 64, out_f: int = 24):
    from backends.nm import nm_mask

    g = torch.Generator().manual_seed(0)
    weight, bias = torch.randn(out_f, in_f, generator=g), torch.randn(out_f, generator=g)
    return backends.create("fused", weight, nm_mask((out_f, in_f), n, m, generator=g), bias)


def test_nm_family_is_a_candidate_for_nm_layers_only_and_keyed_by_pattern(cache):
    nm_family = ops.FAMILIES.index("nm")
    layer = _nm_layer()
    assert layer.nm_pattern == (2, 4)
    assert tuner.layer_key(layer, 0).endswith(":nm2of4")
    timed = tuner.measure(layer, 3, 1)
    assert any(ops.decode(code).family == nm_family for code, _ in timed)
    plain = _layer()
    assert plain.nm_pattern is None and ":nm" not in tuner.layer_key(plain, 0)
    assert not any(ops.decode(code).family == nm_family for code, _ in tuner.measure(plain, 3, 1))
    layer.tune([3], threads=1)  # whatever wins is installed and written
    entry = tuner.cached_entries(1)[tuner.layer_key(layer, tuner.bucket_of(3))]
    assert any("/nm/" in name for name in entry["fastest_us"])


def test_an_installed_nm_variant_runs_the_layer(cache):
    layer = _nm_layer(1, 8)
    isa = ops.ISAS[int(ops.load().fused_isa())]
    layer._install(1, tuner.bucket_of(5), ops.encode(isa, "nm", parallel=False), ())
    assert layer.variant_for(5, threads=1) == f"{isa}/nm/ser"
    x = torch.randn(5, 64)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            y = layer(x)
    finally:
        torch.set_num_threads(before)
    dense = backends.create("naive", *_dense_args(layer))
    torch.testing.assert_close(y, dense(x), rtol=1e-5, atol=1e-5)


def _dense_args(layer):
    """(weight, mask, bias) rebuilt from a condensed layer."""
    weight = torch.zeros(layer.out_features, layer.in_features)
    weight[layer.active] = weight[layer.active].scatter(1, layer.indices64, layer.values)
    return weight, weight != 0, layer.bias


def test_parallel_candidates_are_timed_on_the_team_whatever_auto_mode_was_doing(cache):
    """While auto mode runs jobs serially (after a pool job waited 100 ms for a helper), the
    tuner still times the parallel candidates in parallel, on the OpenMP team, and leaves the
    mode as it was."""
    o = ops.load()
    before_threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        before_mode = o.pool_set_mode(-1)
        auto_onto_pool(o)
        start_pool_helper(o)
        late_pool_job(o)
        serial = o.pool_stats()
        o.pool_test_chunks(4, -1, 0)
        assert o.pool_stats()[7] == serial[7] + 1, "auto mode was not running jobs serially"
        start = o.pool_stats()
        times = tuner.measure(_layer(), 256, 2)
        end = o.pool_stats()
        assert times and end[4] > start[4], "the tuner's parallel candidates ran no team job"
        assert end[7] == start[7] and end[1] == start[1], "candidates ran serially or on the pool"
        assert o.pool_set_mode(-1) == 2, "the tuner did not restore auto mode"
    finally:
        o.pool_set_mode(before_mode)
        torch.set_num_threads(before_threads)


def test_both_window_layouts_are_timed_and_the_cached_one_is_installed(cache, monkeypatch):
    """The tuner times each permute geometry with block-aligned and sliding windows, and a
    cached entry's window layout is the one the layer then packs and runs."""
    isa = int(ops.load().fused_isa())
    if isa == 0:
        pytest.skip("no SIMD permute kernel on this CPU")
    layer = _layer()
    timed = tuner.measure(layer, 1, 2)
    perm = {pack for code, pack in timed if ops.is_perm(code)}
    assert perm == {(*g, w) for g in ops.perm_geometries(isa) for w in (1, 2)}
    # a cached winner with aligned windows: the layer adopts that pack
    key = tuner.layer_key(layer, 0)
    geo = ops.perm_geometries(isa)[0]
    code = ops.encode(ops.ISAS[isa], "perm", parallel=False)
    _write_entries(tuner.cache_path(2), {key: {"variant": code, "geometry": list(geo),
                                              "windows": 1, "batch": 1}})  # fmt: skip
    fresh = _layer()
    monkeypatch.setattr(tuner, "measure", lambda *a: pytest.fail("timed a cached winner"))
    assert fresh.tune([1], threads=2)[1] == ops.variant_name(code, geo[1], geo[0], 1)
    assert fresh.perm_windows == 1 and fresh.variant_for(1, 2).endswith("a/ser")
    info = list(ops.load().fused_pack_info(fresh.kernel_blob))
    aligned = list(ops.load().fused_pack_info(fresh._pack(geo, 1)))
    assert info == aligned
    x = torch.randn(1, CASES[7].in_features)
    torch.testing.assert_close(fresh(x), _layer()(x), rtol=1e-5, atol=1e-5)
