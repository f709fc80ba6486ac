"""The direct conv kernel's autotuner (backends.kernels.conv_tuner): bad cache entries are
dropped with a warning and timed again, never returned to the kernel."""

from __future__ import annotations

import json

import pytest

import backends.kernels.tune_cache as tune_cache
from backends.kernels import conv_tuner
from backends.kernels.tune_cache import TuneCacheWarning


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SRIGL_TUNE", raising=False)
    conv_tuner.forget_memory()
    yield tmp_path
    conv_tuner.forget_memory()


OTHER = {"variant": 101, "load_avg_1m": 0.5, "cores_given": 1.9}


def _write(path, entries: dict) -> None:
    isa, threads = 1, 2
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"schema": conv_tuner.SCHEMA, "machine": conv_tuner.machine_key(isa, threads)}
    path.write_text(json.dumps({**data, "entries": entries}))
    conv_tuner.forget_memory()


@pytest.mark.parametrize(
    "bad",
    [
        "abc",
        150,  # the old format (a bare code)
        [1, 2],
        {"variant": 150},  # not a code of this ISA
        {"variant": True},
        {"variant": 101, "load_avg_1m": "busy"},
        {"variant": 101, "cores_given": [2]},
    ],
)
def test_a_bad_conv_cache_entry_is_dropped_timed_again_and_written_back(cache, bad):
    isa, nvariants, threads = 1, 6, 2
    path = conv_tuner.cache_path(isa, threads)
    _write(path, {"layer": bad, "other": OTHER})
    ran = []
    with pytest.warns(TuneCacheWarning, match="'layer'") as rec:
        code = conv_tuner.best_variant("layer", isa, nvariants, ran.append, threads, extra=(-2,))
    assert len(rec) == 1
    assert code in [100 + v for v in range(nvariants)] + [-2] and ran  # timed again
    written = json.loads(path.read_text())["entries"]
    assert written["other"] == OTHER and written["layer"]["variant"] == code
    assert set(written["layer"]) == {"variant", "load_avg_1m", "cores_given"}


@pytest.mark.parametrize(
    "entry,again",
    [
        ({"variant": 101, "load_avg_1m": 0.1, "cores_given": 1.9}, False),  # quiet, both cores
        ({"variant": 101, "load_avg_1m": 0.1, "cores_given": 1.0}, True),  # one core of two
        ({"variant": 101, "load_avg_1m": 100.0, "cores_given": 1.9}, True),  # very busy
    ],
)
def test_a_conv_entry_timed_under_load_is_timed_again_when_quiet(cache, monkeypatch, entry, again):
    monkeypatch.setattr(tune_cache, "_cores_given", {})
    monkeypatch.setattr(tune_cache, "core_scaling", lambda threads: 1.95)  # both cores now
    monkeypatch.setattr(tune_cache, "load_average", lambda: 0.1)  # and quiet
    isa, nvariants, threads = 1, 6, 2
    _write(conv_tuner.cache_path(isa, threads), {"layer": entry})
    ran = []
    code = conv_tuner.best_variant("layer", isa, nvariants, ran.append, threads)
    assert bool(ran) is again
    assert code == 101 or again


def test_the_conv_cache_key_names_the_conv_and_fused_linear_kernel_sources():
    """The conv tuner also times the fused linear (a 1x1 conv's candidate): a change to either
    extension's sources gives a new cache key."""
    from backends import fused_conv
    from backends.kernels import conv_tuner, ops
    from backends.kernels.build import source_digest

    assert fused_conv.SOURCES is conv_tuner.SOURCES  # one list: what is built is what is keyed
    both = conv_tuner.SOURCES + [p for p in ops.SOURCES if p not in conv_tuner.SOURCES]
    assert conv_tuner.machine_key(0, 2)["kernels"] == source_digest(both)
    assert source_digest(both) != source_digest(conv_tuner.SOURCES)
