"""The Triton kernel of the ``fused`` backend on CUDA (imported lazily: Triton is optional).

Triton reads ``TRITON_INTERPRET`` when ``@triton.jit`` decorates, i.e. when this module is
imported: set it before the first import to run the kernel on CPU tensors (tests).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def condensed_linear_kernel(
    x_ptr,  # [M, in]
    values_ptr,  # [n, k]
    indices_ptr,  # [n, k] int16/int32
    active_ptr,  # [n] int64
    bias_ptr,  # [out]
    out_ptr,  # [M, out]
    M,
    N,
    K,
    stride_xm,
    stride_om,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]] for a
    BLOCK_M x BLOCK_N tile of (rows of x, active neurons); accumulates in float32."""
    pid_n = tl.program_id(0)
    pid_m = tl.program_id(1)
    rows = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ms = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    m_ok = ms < M
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for t in range(0, K):
        idx = tl.load(indices_ptr + rows * K + t, mask=row_ok, other=0).to(tl.int64)
        v = tl.load(values_ptr + rows * K + t, mask=row_ok, other=0.0).to(tl.float32)
        xg = tl.load(
            x_ptr + ms[:, None] * stride_xm + idx[None, :],
            mask=m_ok[:, None] & row_ok[None, :],
            other=0.0,
        ).to(tl.float32)
        acc += xg * v[None, :]
    cols = tl.load(active_ptr + rows, mask=row_ok, other=0)
    b = tl.load(bias_ptr + cols, mask=row_ok, other=0.0).to(tl.float32)
    acc += b[None, :]
    tl.store(
        out_ptr + ms[:, None] * stride_om + cols[None, :],
        acc.to(out_ptr.dtype.element_ty),
        mask=m_ok[:, None] & row_ok[None, :],
    )
