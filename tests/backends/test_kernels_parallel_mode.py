"""backends.kernels.parallel_mode: the tuners time their candidates with each extension's jobs
on the OpenMP team (SRIGL_PARALLEL=team) and restore each extension's mode afterwards."""

from __future__ import annotations

import pytest
import torch

import backends
from backends import dense_kernel
from backends.kernels.parallel_mode import TEAM, on_team


class _Modes:
    """A fake extension mode setter: returns the previous mode, records every call."""

    def __init__(self, mode: int) -> None:
        self.mode, self.calls = mode, []

    def __call__(self, mode: int) -> int:
        self.calls.append(mode)
        old = self.mode
        if mode >= 0:
            self.mode = mode
        return old


def test_on_team_sets_each_extension_to_the_team_and_restores_it_also_on_error():
    a, b = _Modes(2), _Modes(0)
    with on_team(a, b):
        assert (a.mode, b.mode) == (TEAM, TEAM)
    assert (a.mode, b.mode) == (2, 0)
    with pytest.raises(RuntimeError, match="boom"), on_team(a):
        raise RuntimeError("boom")
    assert a.mode == 2 and a.calls[-1] == 2


def test_the_dense_kernel_tuner_times_on_the_team_and_restores_auto(tmp_path, monkeypatch):
    ok, why = dense_kernel.EXTENSION.available()
    if not ok:
        pytest.skip(f"dense kernel unavailable: {why}")
    ops = dense_kernel.load()
    monkeypatch.setenv("SRIGL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(dense_kernel, "_TUNE", [True])
    dense_kernel._TUNE_CACHE.forget()
    seen = []
    real = dense_kernel.fastest_interleaved
    monkeypatch.setattr(
        dense_kernel,
        "fastest_interleaved",
        lambda *a, **kw: seen.append(int(ops.dense_pool_set_mode(-1))) or real(*a, **kw),
    )
    before = ops.dense_pool_set_mode(2)
    try:
        g = torch.Generator().manual_seed(0)
        w, mask = torch.randn(30, 20, generator=g), torch.rand(30, 20, generator=g) < 0.5
        layer = backends.create("dense_kernel", w, mask, torch.zeros(30))
        layer.variant_code(5)
        assert seen == [TEAM], "the dense tuner did not time on the team"
        assert int(ops.dense_pool_set_mode(-1)) == 2, "the dense tuner did not restore auto"
    finally:
        ops.dense_pool_set_mode(before)
        dense_kernel._TUNE_CACHE.forget()


def test_the_conv_tuner_times_on_the_team_in_both_extensions(monkeypatch):
    from conv_cases import CONV_CASES, conv_input, conv_layer

    import backends.fused_conv as fc
    from backends.kernels import ops as linear_ops

    ok, why = backends.supports("fused", "cpu", torch.float32, op="conv2d")
    if not ok or not linear_ops.available()[0]:
        pytest.skip(f"fused conv or linear kernels unavailable: {why}")
    conv = fc.conv_ops()
    lin = linear_ops.load()
    seen = []
    monkeypatch.setattr(
        fc,
        "best_variant",
        lambda *a, **kw: seen.append((conv.conv_pool_set_mode(-1), lin.pool_set_mode(-1))) or -1,
    )
    before = conv.conv_pool_set_mode(2), lin.pool_set_mode(2)
    try:
        case = CONV_CASES[0]  # 1x1: the fused linear is a candidate too
        layer = backends.create("fused", *conv_layer(case, 1), **case.conv_args)
        layer(conv_input(case, 1))
        assert seen == [(TEAM, TEAM)], "the conv tuner did not time on the team"
        assert (conv.conv_pool_set_mode(-1), lin.pool_set_mode(-1)) == (2, 2)
    finally:
        conv.conv_pool_set_mode(before[0])
        lin.pool_set_mode(before[1])
