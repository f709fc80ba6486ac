"""``fused``: hand-written condensed kernels, a numba kernel on CPU and a Triton kernel on CUDA.

Inference only (no autograd). Besides ``forward(x)`` for x [..., in], ``forward_transposed(xt)``
takes activations laid out as [in, batch] and returns [out, batch], so a model can keep its
activations transposed between layers and skip the transposes (CPU).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from backends import BACKENDS
from backends.base import BadInputError
from backends.condensed import CondensedLinear
from backends.fused_cpu import NumbaCondensed, kernel_index_dtype, numba_available
from backends.fused_triton import triton_available, triton_linear


@BACKENDS.register("fused")
class FusedLinear(CondensedLinear):
    """numba kernel on CPU (float32: numba has no bfloat16 and no fast float16), Triton kernel
    on CUDA (float32, bfloat16, float16); int16 indices when in_features < 32768."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        ok, why = super().available(device)
        if not ok:
            return ok, why
        if torch.device(device).type == "cuda":
            return triton_available(device)
        return numba_available()

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        ok, why = super().supports(device, dtype)
        if ok and torch.device(device).type == "cpu" and dtype != torch.float32:
            return False, f"the numba CPU kernel computes float32 only, not {dtype}"
        return ok, why

    def _after_load(self) -> None:
        super()._after_load()
        kidx = self.indices.to(kernel_index_dtype(self.in_features)).contiguous()
        self.register_buffer("kernel_indices", kidx, persistent=False)
        self._numba = None
        if self.device.type == "cpu" and self.dtype == torch.float32:
            self._numba = NumbaCondensed(
                self.values, self.kernel_indices, self.active, self.bias, self._all_active
            )

    def _cpu_kernel(self) -> NumbaCondensed:
        if self._numba is None:
            raise BadInputError(
                f"layer {self.layer_name!r}: the numba CPU kernel computes float32 only, "
                f"this layer holds {self.dtype}"
            )
        return self._numba

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight * mask, bias)`` for x [..., in] -> [..., out], x.dtype."""
        if x.dim() == 2 and self._numba is not None:  # the hot path, checks inlined
            if x.shape[1] != self.in_features or x.dtype != torch.float32 or not x.is_cpu:
                self.check_input(x)
            return self._numba.linear(x)
        return super().forward(x)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return triton_linear(
                x, self.values, self.kernel_indices, self.active, self.bias, self._all_active
            )
        return self._cpu_kernel().linear(x)

    def forward_transposed(self, xt: torch.Tensor) -> torch.Tensor:
        """The same layer on transposed activations: xt [in, B] -> yT [out, B] (CPU, float32).

        ``layer.forward_transposed(x.T.contiguous()).T == layer(x)``; chaining layers this way
        avoids transposing between them.
        """
        if xt.dim() != 2 or xt.shape[0] != self.in_features:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected transposed input [{self.in_features}, B], "
                f"got shape {list(xt.shape)}"
            )
        self.check_input(xt.t())
        if xt.is_cuda:
            return triton_linear(
                xt.t(),
                self.values,
                self.kernel_indices,
                self.active,
                self.bias,
                self._all_active,
            ).t()
        return self._cpu_kernel().linear_transposed(xt)
