"""The Triton condensed-GEMM kernel (``backends/_triton_kernel.py``): its launcher, and the
``fused_triton`` backend that picks it explicitly.

On CUDA the ``fused`` backend uses this kernel too. On CPU Triton compiles nothing; its
interpreter (``TRITON_INTERPRET=1`` in the environment before the kernel module is first
imported) runs the same kernel on CPU tensors, slowly: that is how the kernel is tested here.
"""

from __future__ import annotations

import importlib.util
import os
from typing import ClassVar

import torch

from backends import BACKENDS
from backends.condensed import CondensedLinear
from backends.fused_cpu import kernel_index_dtype
from backends.hot_path import grad_needed


def interpreting() -> bool:
    """Whether Triton's interpreter is switched on (``TRITON_INTERPRET`` = 1/true/on)."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def triton_available(device: str | torch.device) -> tuple[bool, str]:
    """Whether the Triton kernel runs on ``device`` here: ``(True, "")`` or ``(False, why)``."""
    if importlib.util.find_spec("triton") is None:
        return False, "triton is not installed"
    dev = torch.device(device).type
    if dev == "cuda":
        if not torch.cuda.is_available():
            return False, "CUDA is not available on this machine"
        return True, ""
    if dev == "cpu":
        if interpreting():
            return True, ""
        return False, (
            "Triton compiles GPU kernels only; on CPU it runs under its interpreter "
            "(TRITON_INTERPRET=1 set before backends._triton_kernel is imported), for tests"
        )
    return False, f"Triton kernel runs on cuda (or cpu when interpreted), not {dev!r}"


def triton_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    active: torch.Tensor,
    bias: torch.Tensor,
    all_active: bool,
) -> torch.Tensor:
    """y [M, out] = condensed linear of x [M, in] with the Triton kernel (float32 accumulate).

    Args:
        x: [M, in], float32/bfloat16/float16; values: [n, k], x.dtype;
        indices: int16/int32 [n, k]; active: int64 [n]; bias: [out], x.dtype.
    """
    from backends._triton_kernel import condensed_linear_kernel

    x = x.contiguous()
    m_rows, out_f = x.shape[0], bias.shape[0]
    n, k = values.shape
    out = x.new_empty(m_rows, out_f) if all_active else bias.expand(m_rows, out_f).clone()
    if n == 0 or m_rows == 0:
        return out
    block_m = 16 if m_rows <= 16 else 64
    block_n = 64
    grid = ((n + block_n - 1) // block_n, (m_rows + block_m - 1) // block_m)
    condensed_linear_kernel[grid](
        x,
        values,
        indices,
        active,
        bias,
        out,
        m_rows,
        n,
        k,
        x.stride(0),
        out.stride(0),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
    )
    return out


@BACKENDS.register("fused_triton")
class FusedTritonLinear(CondensedLinear):
    """The Triton kernel on its own: CUDA, or CPU under ``TRITON_INTERPRET=1`` (tests only)."""

    devices: ClassVar[tuple[str, ...]] = ("cuda", "cpu")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        return triton_available(device)

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        ok, why = super().supports(device, dtype)
        if ok and torch.device(device).type == "cpu" and dtype != torch.float32:
            return False, "the Triton interpreter on CPU is tested with float32 only"
        return ok, why

    def _after_load(self) -> None:
        super()._after_load()
        kidx = self.indices.to(kernel_index_dtype(self.in_features)).contiguous()
        self.register_buffer("kernel_indices", kidx, persistent=False)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, in] -> [M, out]; where a gradient is needed (the Triton kernel has no
        backward), the differentiable gather form of the ``naive`` backend runs instead."""
        if grad_needed(x, self.values):
            from backends.naive import gather_linear

            return self.scatter_active(gather_linear(x, self.values, self.indices64))
        return triton_linear(
            x, self.values, self.kernel_indices, self.active, self.bias, self._all_active
        )
