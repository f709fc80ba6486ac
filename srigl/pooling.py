"""Max-pooling in the channels-last layout: a rewrite that :func:`srigl.condense` applies, and the
whole-model bench applies to its BN-folded dense baseline too (so that the comparison with that
baseline measures sparsity alone).

torch's CPU max-pooling of a contiguous NCHW tensor runs a kernel that walks one channel plane
at a time; in the channels-last layout it runs a vectorised kernel over the channels. On the
project's machines (torch 2.14.1, 2 threads) ResNet-50's stem pooling (3x3, stride 2, 64 x
112 x 112, batch 1) took 2.4 ms in NCHW and 0.35-0.40 ms through channels-last, layout changes
both ways included: 7% of the BN-folded dense model. :class:`ChannelsLastMaxPool2d` computes
the same values (max is exact; NaN propagates alike) and returns the layout it was given.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from srigl._surgery import set_child

__all__ = ["MIN_CHANNELS", "ChannelsLastMaxPool2d", "channels_last_pooling"]

#: Fewer channels than this stay in NCHW: the channels-last kernel vectorises over channels, and
#: with 3 (an image) it was slower than the NCHW kernel (9 vs 5 us at 3 x 32 x 32).
MIN_CHANNELS = 16


class ChannelsLastMaxPool2d(nn.MaxPool2d):
    """``nn.MaxPool2d`` that pools a contiguous NCHW CPU input with >= :data:`MIN_CHANNELS`
    channels in the channels-last layout: x [N, C, H, W] -> [N, C, H', W'] (x's dtype and
    layout); any other input (indices asked for, 3-D, CUDA, already channels-last, few
    channels) takes ``nn.MaxPool2d``'s own path."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.return_indices
            or x.dim() != 4
            or x.device.type != "cpu"
            or x.shape[1] < MIN_CHANNELS
            or not x.is_contiguous()
        ):
            return super().forward(x)
        y = F.max_pool2d(
            x.contiguous(memory_format=torch.channels_last),
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            ceil_mode=self.ceil_mode,
        )
        return y.contiguous()


def channels_last_pooling(model: nn.Module) -> list[str]:
    """Replace every plain ``nn.MaxPool2d`` of ``model`` (in place; subclasses, and poolings
    that return indices, which the channels-last path does not give, are left alone) by a
    :class:`ChannelsLastMaxPool2d` with the same settings; returns the replaced modules' names."""
    names = [
        n
        for n, m in model.named_modules(remove_duplicate=False)
        if n and type(m) is nn.MaxPool2d and not m.return_indices
    ]
    made: dict[int, ChannelsLastMaxPool2d] = {}  # a module registered twice stays one module
    for name in names:
        old = model.get_submodule(name)
        new = made.get(id(old))
        if new is None:
            new = made[id(old)] = ChannelsLastMaxPool2d(
                old.kernel_size,
                old.stride,
                old.padding,
                old.dilation,
                return_indices=old.return_indices,
                ceil_mode=old.ceil_mode,
            )
            new.train(old.training)
        set_child(model, name, new)
    return names
