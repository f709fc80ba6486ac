"""srigl.pooling: channels-last max-pooling gives nn.MaxPool2d's values and layout, and the
rewrite that condense (and the bench's folded baseline) applies."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import srigl
import srigl.pooling as pooling
from srigl.pooling import MIN_CHANNELS, ChannelsLastMaxPool2d, channels_last_pooling

SETTINGS = [
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=2, stride=2),
    dict(kernel_size=(3, 2), stride=(1, 2), padding=(1, 0)),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=1, dilation=2, padding=1),
]


@pytest.fixture
def pooled(monkeypatch):
    """The tensors torch's max-pooling received during the test."""
    seen: list[torch.Tensor] = []
    real = pooling.F.max_pool2d

    def spy(x, *args, **kwargs):
        seen.append(x)
        return real(x, *args, **kwargs)

    monkeypatch.setattr(pooling.F, "max_pool2d", spy)
    return seen


@pytest.mark.parametrize("settings", SETTINGS, ids=str)
@pytest.mark.parametrize("shape", [(1, 16, 13, 11), (3, 40, 8, 9)], ids=str)
def test_same_values_and_layout_as_maxpool(settings, shape, pooled):
    torch.manual_seed(0)
    x = torch.randn(shape)
    x[0, 1, 2, 3], x[-1, 2, 0, 0], x[0, 5, 4, 4] = float("nan"), float("inf"), float("-inf")
    want = nn.MaxPool2d(**settings)(x)
    pooled.clear()
    got = ChannelsLastMaxPool2d(**settings)(x)
    assert got.is_contiguous()  # NCHW in, NCHW out
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    (arg,) = pooled
    assert arg is not x and arg.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(
    "x",
    [
        torch.randn(2, MIN_CHANNELS - 1, 8, 8),  # few channels
        torch.randn(MIN_CHANNELS, 8, 8),  # 3-D
        torch.randn(1, MIN_CHANNELS, 8, 8).contiguous(memory_format=torch.channels_last),
        torch.randn(1, MIN_CHANNELS, 8, 16)[..., ::2],  # not contiguous
    ],
    ids=["few-channels", "3d", "channels-last", "strided"],
)
def test_other_inputs_take_maxpools_own_path(x, pooled):
    want = nn.MaxPool2d(3, 2, 1)(x)
    pooled.clear()
    got = ChannelsLastMaxPool2d(3, 2, 1)(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert got.stride() == want.stride()
    assert len(pooled) == 1 and pooled[0] is x


def test_indices_asked_for_take_maxpools_own_path(pooled):
    x = torch.randn(1, 32, 9, 9)
    want, widx = nn.MaxPool2d(2, 2, return_indices=True)(x)
    pooled.clear()
    got, idx = ChannelsLastMaxPool2d(2, 2, return_indices=True)(x)
    assert torch.equal(got, want) and torch.equal(idx, widx)
    assert len(pooled) == 1 and pooled[0] is x


class _Custom(nn.MaxPool2d):
    pass


def test_rewrite_replaces_plain_maxpools_keeps_settings_and_sharing():
    shared = nn.MaxPool2d(3, 2, 1, ceil_mode=True)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3),
        shared,
        nn.Sequential(nn.Conv2d(16, 16, 1), shared),
        _Custom(2),
        nn.AvgPool2d(2),
        nn.MaxPool2d(2, return_indices=True),
    )
    model.eval()
    names = channels_last_pooling(model)
    assert sorted(names) == ["1", "2.1"]
    assert type(model[1]) is ChannelsLastMaxPool2d and model[2][1] is model[1]
    assert (model[1].kernel_size, model[1].stride, model[1].padding) == (3, 2, 1)
    assert model[1].ceil_mode and not model[1].training
    assert type(model[3]) is _Custom and type(model[4]) is nn.AvgPool2d
    assert type(model[5]) is nn.MaxPool2d  # indices asked for: its own path anyway
    assert channels_last_pooling(model) == []  # nothing plain left


def test_condense_pools_channels_last_and_reports_it():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
    ).eval()
    mask = torch.rand_like(model[0].weight) < 0.5
    small = srigl.condense(model, {"0.weight": mask}, backend="structured")
    assert small.condense_report.pools == ["3"]
    assert isinstance(small[3], ChannelsLastMaxPool2d)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        model[0].weight.mul_(mask)
        torch.testing.assert_close(small(x), model(x), rtol=1e-4, atol=1e-5)
