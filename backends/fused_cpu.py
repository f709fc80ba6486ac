"""Launchers of the hand-written numba CPU kernels (``backends/_numba_kernels.py``).

The kernels keep int16 indices when in_features < 32768 (int32 otherwise), read float32, and
run parallel over output neurons (small batches) or over batch tiles (large batches) with as
many numba threads as torch uses.
"""

from __future__ import annotations

import importlib.util

import torch

# Up to this many rows of x the row kernel (parallel over neurons) wins; above it the tiled
# kernel (parallel over batch tiles, 4 gathered rows per step) does. Measured: see README.
ROWS_KERNEL_MAX_BATCH = 4


def numba_available() -> tuple[bool, str]:
    """``(True, "")`` if numba can be imported, else ``(False, why)``."""
    if importlib.util.find_spec("numba") is None:
        return False, "numba is not installed (pip install 'srigl-bench[kernels]')"
    return True, ""


def kernel_index_dtype(in_features: int) -> torch.dtype:
    """int16 when every column index fits (in_features < 32768), else int32."""
    return torch.int16 if in_features < 2**15 else torch.int32


_state = {"threads": None}


def _kernels():
    """The numba kernel module, imported on first use, numba threads matched to torch's."""
    from backends import _numba_kernels

    threads = torch.get_num_threads()
    if _state["threads"] != threads:
        import numba

        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        _state["threads"] = threads
    return _numba_kernels


def numba_linear(
    x: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    active: torch.Tensor,
    bias: torch.Tensor,
    all_active: bool,
) -> torch.Tensor:
    """y [M, out] = condensed linear of x [M, in] (float32, CPU).

    Args:
        values: float32 [n, k]; indices: int16/int32 [n, k]; active: int64 [n];
        bias: float32 [out]; all_active: active == arange(out).
    """
    kern = _kernels()
    m_rows, out_f = x.shape[0], bias.shape[0]
    out = torch.empty(m_rows, out_f) if all_active else bias.expand(m_rows, out_f).clone()
    if values.shape[0] == 0:
        return out
    xn = x.detach().contiguous().numpy()
    args = (values.numpy(), indices.numpy(), active.numpy(), bias.numpy(), xn, out.numpy())
    if m_rows <= ROWS_KERNEL_MAX_BATCH:
        kern.rows_kernel(*args)
    else:
        kern.tiled_kernel(*args)
    return out


def numba_linear_transposed(
    xt: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    active: torch.Tensor,
    bias: torch.Tensor,
    all_active: bool,
) -> torch.Tensor:
    """yT [out, B] = condensed linear of activations laid out as xT [in, B] (float32, CPU).

    Row i of ``xt`` holds input feature i for every batch column; the result keeps that layout,
    so consecutive layers can stay transposed. Arguments as in :func:`numba_linear`.
    """
    kern = _kernels()
    nb, out_f = xt.shape[1], bias.shape[0]
    out = torch.empty(out_f, nb) if all_active else bias[:, None].expand(out_f, nb).clone()
    if values.shape[0] == 0 or nb == 0:
        return out
    xn = xt.detach().contiguous().numpy()
    kern.transposed_kernel(
        values.numpy(), indices.numpy(), active.numpy(), bias.numpy(), xn, out.numpy()
    )
    return out
