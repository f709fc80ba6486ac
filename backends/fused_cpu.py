"""Launchers of the hand-written numba CPU kernels (``backends/_numba_kernels.py``): the
``fused`` backend's CPU kernel where the C++ kernel (``backends/kernels``) cannot be built.

The kernels keep int16 indices when in_features < 32768 (int32 otherwise), read float32, and
run parallel over output neurons (small batches) or over batch tiles (large batches) with as
many numba threads as torch uses.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import torch

# Up to this many rows of x the row kernel (parallel over neurons) wins; above it the tiled
# kernel (parallel over batch tiles, 4 gathered rows per step) does. Measured on one thread,
# 90% sparse ViT-B/16 MLP layers: the row kernel costs ~55 us per row of x, the tiled one
# ~360 us for any batch up to 32.
ROWS_KERNEL_MAX_BATCH = 6
# Up to this many multiply-adds the row kernel runs on the calling thread. Measured on the
# shared 2-core machine this was developed on, a 90% sparse ViT-B/16 MLP layer at batch 1
# (236K multiply-adds): 57-61 us serial; with 2 threads 50-62 us (OMP_WAIT_POLICY=PASSIVE)
# or 4-12 ms (libgomp's default waiting while other processes hold the cores): waking the
# second thread cost about what it saved. On a dedicated machine lower this (e.g. to 32_768)
# to split such layers over the threads.
SERIAL_MAX_MACS = 2**18

_UNSIGNED = {torch.int16: np.uint16, torch.int32: np.uint32}


def numba_available() -> tuple[bool, str]:
    """``(True, "")`` if numba can be imported, else ``(False, why)``."""
    if importlib.util.find_spec("numba") is None:
        return False, "numba is not installed (pip install 'srigl-bench[kernels]')"
    return True, ""


def kernel_index_dtype(in_features: int) -> torch.dtype:
    """int16 when every column index fits (in_features < 32768), else int32."""
    return torch.int16 if in_features < 2**15 else torch.int32


_state: dict = {"numba": None, "numba_threads": 1}


def _kernels():
    """The numba kernel module, imported on first use, with numba's thread count (a per-thread
    setting in numba) set to torch's, capped at NUMBA_NUM_THREADS."""
    numba = _state["numba"]
    if numba is None:
        import numba

        _state["numba"] = numba
    from backends import _numba_kernels

    want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
    _state["numba_threads"] = want
    return _numba_kernels


class NumbaCondensed:
    """numpy views of a condensed layer's CPU buffers and the launchers of its kernels.

    Args:
        values: float32 [n, k]; indices: int16/int32 [n, k] (see :func:`kernel_index_dtype`);
        active: int64 [n]; bias: float32 [out] (all on CPU; the views share their memory).
        all_active: active == arange(out): no bias pre-fill of ablated neurons needed.
    """

    def __init__(
        self,
        values: torch.Tensor,
        indices: torch.Tensor,
        active: torch.Tensor,
        bias: torch.Tensor,
        all_active: bool,
    ) -> None:
        self.bias = bias
        self.all_active = all_active
        self.n, self.out_features = values.shape[0], bias.shape[0]
        self.macs_per_row = values.numel()
        idx = indices.numpy().view(_UNSIGNED[indices.dtype])  # indices are >= 0: same bits
        self.args = (values.numpy(), idx, active.numpy(), bias.numpy())

    def kernel_for(self, m_rows: int) -> str:
        """Which numba kernel :meth:`linear` runs for ``m_rows`` rows: rows/ser, rows/par, tiled."""
        if m_rows > ROWS_KERNEL_MAX_BATCH:
            return "tiled"
        return "rows/ser" if m_rows * self.macs_per_row <= SERIAL_MAX_MACS else "rows/par"

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """y [M, out] = condensed linear of x [M, in], float32 (x.contiguous() is used)."""
        kern = _kernels()
        m_rows = x.shape[0]
        if self.all_active:
            out = torch.empty(m_rows, self.out_features)
        else:
            out = self.bias.expand(m_rows, self.out_features).clone()
        if self.n == 0:
            return out
        xn = x.detach().contiguous().numpy()
        if m_rows > ROWS_KERNEL_MAX_BATCH:
            kern.tiled_kernel(*self.args, xn, out.numpy(), _state["numba_threads"])
        elif m_rows * self.macs_per_row <= SERIAL_MAX_MACS:
            kern.rows_kernel_serial(*self.args, xn, out.numpy())
        else:
            kern.rows_kernel(*self.args, xn, out.numpy())
        return out

    def linear_transposed(self, xt: torch.Tensor) -> torch.Tensor:
        """yT [out, B] = condensed linear of activations laid out as xT [in, B], float32.

        Row i of ``xt`` holds input feature i for every batch column; the result keeps that
        layout, so consecutive layers can stay transposed.
        """
        nb = xt.shape[1]
        if nb <= ROWS_KERNEL_MAX_BATCH:  # a few columns: the row kernel on the tiny transpose
            return self.linear(xt.t()).t()
        kern = _kernels()
        if self.all_active:
            out = torch.empty(self.out_features, nb)
        else:
            out = self.bias[:, None].expand(self.out_features, nb).clone()
        if self.n == 0:
            return out
        xn = xt.detach().contiguous().numpy()
        kern.transposed_kernel(*self.args, xn, out.numpy(), _state["numba_threads"])
        return out
