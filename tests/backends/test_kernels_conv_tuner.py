"""The direct conv kernel's autotuner (backends.kernels.conv_tuner): bad cache entries are
dropped with a warning and timed again, never returned to the kernel."""

from __future__ import annotations

import json

import pytest

from backends.kernels import conv_tuner
from backends.kernels.tune_cache import TuneCacheWarning


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("SRIGL_TUNE", raising=False)
    conv_tuner.forget_memory()
    yield tmp_path
    conv_tuner.forget_memory()


@pytest.mark.parametrize("bad", ["abc", 150, [1, 2], 1.5, True])
def test_a_bad_conv_cache_entry_is_dropped_timed_again_and_written_back(cache, bad):
    isa, nvariants, threads = 1, 6, 2
    path = conv_tuner.cache_path(isa, threads)
    path.parent.mkdir(parents=True)
    machine = conv_tuner.machine_key(isa, threads)
    data = {"schema": conv_tuner.SCHEMA, "machine": machine}
    path.write_text(json.dumps({**data, "entries": {"layer": bad, "other": 101}}))
    ran = []
    with pytest.warns(TuneCacheWarning, match="'layer'") as rec:
        code = conv_tuner.best_variant("layer", isa, nvariants, ran.append, threads, extra=(-2,))
    assert len(rec) == 1
    assert code in [100 + v for v in range(nvariants)] + [-2] and ran  # timed again
    assert json.loads(path.read_text())["entries"] == {"layer": code, "other": 101}


def test_the_conv_cache_key_names_the_conv_kernel_sources():
    from backends import fused_conv
    from backends.kernels import conv_tuner
    from backends.kernels.build import source_digest

    assert fused_conv.SOURCES is conv_tuner.SOURCES  # one list: what is built is what is keyed
    assert conv_tuner.machine_key(0, 2)["kernels"] == source_digest(conv_tuner.SOURCES)
