"""Conv2d layer cases and the error bound shared by the conv backend tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class ConvCase:
    """A masked Conv2d: ``k`` of the fan-in in/groups*kh*kw per active channel (k=None: all of
    it), ``ablated`` output channels with no weights; x is [batch, cin, h, w]."""

    name: str
    cin: int
    cout: int
    kernel: int
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    h: int = 9
    w: int = 11
    batch: int = 2
    k: int | None = 3
    ablated: int = 0

    @property
    def fan_in(self) -> int:
        return self.cin // self.groups * self.kernel * self.kernel

    @property
    def conv_args(self) -> dict:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }


CONV_CASES = [
    ConvCase("k1x1_odd_hw", 16, 24, 1, h=7, w=13, k=5, ablated=3),
    ConvCase("k1x1_stride2", 8, 12, 1, stride=2, h=9, w=10, k=2),
    ConvCase("k3_pad1", 8, 16, 3, padding=1, k=20, ablated=2),
    ConvCase("k3_stride2_pad1_odd", 6, 10, 3, stride=2, padding=1, h=11, w=9, batch=3, k=7),
    ConvCase("k3_dilation2_pad2", 4, 8, 3, padding=2, dilation=2, h=12, w=10, k=9),
    ConvCase("k5_stride2_pad2_groups4", 8, 12, 5, stride=2, padding=2, groups=4, k=11, ablated=1),
    ConvCase("k7_stride2_pad3_rgb", 3, 8, 7, stride=2, padding=3, h=23, w=21, batch=1, k=30),
    ConvCase("depthwise_k3", 12, 12, 3, padding=1, groups=12, h=8, w=5, k=4, ablated=2),
    ConvCase("depthwise_k5_stride2", 6, 6, 5, stride=2, padding=2, groups=6, h=10, w=10, k=6),
    ConvCase("fan_in_1", 5, 7, 3, padding=1, k=1),
    ConvCase("k_equals_fan_in", 4, 6, 3, padding=1, k=None, ablated=1),
    ConvCase("batch_0", 4, 6, 3, padding=1, batch=0, k=8),
    ConvCase("batch_1_large_plane", 16, 8, 3, padding=1, h=40, w=37, batch=1, k=30),
    ConvCase("k3_pad0_no_copy", 6, 9, 3, h=17, w=19, k=10),
]


def conv_layer(case: ConvCase, seed: int, dtype: torch.dtype = torch.float32):
    """(weight [out, in/groups, kh, kw], bool mask, bias [out]) with constant fan-in."""
    g = torch.Generator().manual_seed(seed)
    shape = (case.cout, case.cin // case.groups, case.kernel, case.kernel)
    weight = torch.randn(shape, generator=g).to(dtype)
    bias = torch.randn(case.cout, generator=g).to(dtype)
    k = case.fan_in if case.k is None else case.k
    mask = torch.zeros(case.cout, case.fan_in, dtype=torch.bool)
    for r in range(case.cout):
        mask[r, torch.randperm(case.fan_in, generator=g)[:k]] = True
    mask[torch.randperm(case.cout, generator=g)[: case.ablated]] = False
    return weight, mask.reshape(shape), bias


def conv_input(case: ConvCase, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(case.batch, case.cin, case.h, case.w, generator=g).to(dtype)


def conv_error_bound(x, weight, mask, bias, conv_args, k):
    """(ref, bound): float64 ``F.conv2d`` and 2 (k + 1) eps(dtype) (|W*m| * |x| + |b|)."""
    eps = torch.finfo(x.dtype).eps
    w64 = weight.double() * mask
    ref = F.conv2d(x.double(), w64, bias.double(), **conv_args)
    mag = F.conv2d(x.double().abs(), w64.abs(), bias.double().abs(), **conv_args)
    return ref, 2 * (k + 1) * eps * mag
