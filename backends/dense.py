"""The dense baselines: ``dense`` (masked dense GEMM) and ``structured`` (dense GEMM over the
non-ablated neurons only)."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from backends import BACKENDS
from backends.base import Backend

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)


@BACKENDS.register("dense")
class DenseLinear(Backend):
    """``F.linear(x, weight * mask, bias)`` with the masked weight stored dense [out, in]."""

    dtypes: ClassVar[tuple[torch.dtype, ...]] = _FLOATS
    state_buffers: ClassVar[tuple[str, ...]] = ("weight", "bias")

    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None = None,
        layer_name: str | None = None,
    ) -> None:
        super().__init__()
        mask = self._validated_mask(weight, mask, bias, layer_name)
        w = (weight.detach() * mask).contiguous()
        b = bias.detach().clone() if bias is not None else torch.zeros_like(w[:, 0])
        self._set_state(w.shape[1], w.shape[0], layer_name, weight=w, bias=b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out], same dtype."""
        self.check_input(x)
        return F.linear(x, self.weight, self.bias)


@BACKENDS.register("structured")
class StructuredLinear(Backend):
    """Dense GEMM over the non-ablated neurons only; ablated neurons output their bias.

    Accepts any mask (no constant fan-in needed): ``weight`` keeps the masked rows of the active
    neurons, [n_active, in].
    """

    dtypes: ClassVar[tuple[torch.dtype, ...]] = _FLOATS
    state_buffers: ClassVar[tuple[str, ...]] = ("active", "weight", "bias")

    active: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None = None,
        layer_name: str | None = None,
    ) -> None:
        super().__init__()
        mask = self._validated_mask(weight, mask, bias, layer_name)
        active = torch.nonzero(mask.any(dim=1)).flatten()
        w = (weight.detach() * mask)[active].contiguous()
        b = bias.detach().clone() if bias is not None else torch.zeros_like(weight[:, 0])
        self._set_state(
            weight.shape[1], weight.shape[0], layer_name, active=active, weight=w, bias=b
        )

    def _after_load(self) -> None:
        self._all_active = self.active.numel() == self.out_features
        self.register_buffer("bias_active", self.bias[self.active].clone(), persistent=False)

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
