"""``compiled``: the naive gather-multiply-sum form compiled by ``torch.compile``.

On CPU inductor generates a fused C++ kernel (no [M, n, k] intermediate), on CUDA a Triton
kernel. The first call for a new input shape compiles (seconds); the compiled function is kept
per module. Each module compiles its own copy of the function (a fresh code object), so
dynamo's per-function recompile limit (8 graphs) counts per layer, not for the whole model;
dynamic shapes keep that to one or two graphs per layer (batch 1 is specialised).
"""

from __future__ import annotations

import types
from typing import ClassVar

import torch

from backends import BACKENDS
from backends.condensed import CondensedLinear


def condensed_linear_ref(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    active: torch.Tensor,
    bias: torch.Tensor,
    all_active: bool,
) -> torch.Tensor:
    """y [M, out] with y[:, active[j]] = sum_t values[j, t] * x[:, indices[j, t]] + bias.

    Args:
        x: [M, in]; values: [n, k], x.dtype; indices: int64 [n, k]; active: int64 [n];
        bias: [out], x.dtype; all_active: active == arange(out) (skips the scatter).
    """
    y = (x[:, indices].float() * values.float()).sum(dim=-1).to(x.dtype)
    if all_active:
        return y + bias
    out = bias.expand(x.shape[0], bias.shape[0]).clone()
    return out.index_copy(1, active, y + bias[active])


@BACKENDS.register("compiled")
class CompiledLinear(CondensedLinear):
    """``torch.compile`` of :func:`condensed_linear_ref` (inductor: C++ on CPU, Triton on GPU);
    compiled on the first call, then cached per module."""

    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)
    slow_to_build: ClassVar[bool] = True  # the first call compiles: ~25 s cold, ~1 s cached

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        ok, why = super().available(device)
        if ok and torch.device(device).type == "cpu":
            from torch._inductor import cpp_builder

            try:
                cpp_builder.get_cpp_compiler()
            except Exception as err:  # inductor raises a bare RuntimeError without a compiler
                return False, f"inductor needs a C++ compiler on CPU: {err}"
        return ok, why

    def _after_load(self) -> None:
        super()._after_load()
        self._fn = None

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        if self._fn is None:
            ref = condensed_linear_ref
            own = types.FunctionType(ref.__code__.replace(), ref.__globals__, ref.__name__)
            self._fn = torch.compile(own, dynamic=True)
        return self._fn(x, self.values, self.indices64, self.active, self.bias, self._all_active)
