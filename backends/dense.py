"""The dense baselines: ``dense`` (masked dense GEMM) and ``structured`` (dense GEMM over the
non-ablated neurons only)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from backends import BACKENDS
from backends.base import Backend

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


def _full_bias(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A copy of ``bias``, or zeros [out] in the weight's dtype and device where there is none."""
    return bias.clone() if bias is not None else weight.new_zeros(weight.shape[0])


class MaskedDenseForm:
    """The buffers of the ``dense`` layers, Linear and Conv2d (mixed in before the backend base
    class): ``weight`` the masked weight of the layer's shape, ``bias`` [out]."""

    dtypes: ClassVar[tuple[torch.dtype, ...]] = _FLOATS
    state_buffers: ClassVar[tuple[str, ...]] = ("weight", "bias")

    weight: torch.Tensor
    bias: torch.Tensor

    def _build(
        self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        return {"weight": (weight * mask).contiguous(), "bias": _full_bias(weight, bias)}


class StructuredForm:
    """The buffers of the ``structured`` layers, Linear and Conv2d (mixed in before the backend
    base class): ``active`` int64 [n_active] the non-ablated neurons (output channels),
    ``weight`` their masked rows, ``bias`` [out]. Any mask (no constant fan-in needed)."""

    dtypes: ClassVar[tuple[torch.dtype, ...]] = _FLOATS
    state_buffers: ClassVar[tuple[str, ...]] = ("active", "weight", "bias")

    active: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    out_features: int

    def _build(
        self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        active = torch.nonzero(mask.flatten(1).any(dim=1)).flatten()
        w = (weight * mask)[active].contiguous()
        return {"active": active, "weight": w, "bias": _full_bias(weight, bias)}

    def _after_load(self) -> None:
        self._all_active = self.active.numel() == self.out_features
        self.register_buffer("bias_active", self.bias[self.active].clone(), persistent=False)


@BACKENDS.register("dense")
class DenseLinear(MaskedDenseForm, Backend):
    """``F.linear(x, weight * mask, bias)`` with the masked weight stored dense [out, in]."""

    dense_baseline: ClassVar[bool] = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out], same dtype."""
        self.check_input(x)
        return F.linear(x, self.weight, self.bias)


@BACKENDS.register("structured")
class StructuredLinear(StructuredForm, Backend):
    """Dense GEMM over the non-ablated neurons only; ablated neurons output their bias.

    Accepts any mask (no constant fan-in needed): ``weight`` keeps the masked rows of the active
    neurons, [n_active, in].
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out], same dtype."""
        self.check_input(x)
        if self._all_active:
            return F.linear(x, self.weight, self.bias)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        out = self.bias.expand(x2.shape[0], self.out_features).clone()
        if self.active.numel():
            out.index_copy_(1, self.active, F.linear(x2, self.weight, self.bias_active))
        return out.reshape(*lead, self.out_features)
