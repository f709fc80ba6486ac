"""numba CPU kernels of the ``fused`` backend (imported lazily: numba is optional).

All kernels take the condensed layer (``values`` float32 [n, k], ``indices`` int16/int32 [n, k]
sorted within each row, ``active`` int64 [n], ``bias`` float32 [out]) and write only the rows
``active`` of the output; the caller pre-fills ablated neurons with their bias. Compiled with
``cache=True`` so a process reuses the machine code of the previous one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Batch columns per tile of the batched kernels: a [in, BT] float32 tile of the input
# (3072 x 32 x 4 B = 384 KiB) stays in the 1 MiB L2 while every output row gathers from it.
BT = 32


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def rows_kernel(values, indices, active, bias, x, out):  # pragma: no cover - numba
    """out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]].

    x: float32 [M, in] (C-contiguous); out: float32 [M, out]. Parallel over output neurons;
    meant for small M (each row of ``values`` is read once per m, from L1).
    """
    n, k = values.shape
    m_rows = x.shape[0]
    for j in prange(n):
        row = active[j]
        b = bias[row]
        for m in range(m_rows):
            s = np.float32(0.0)
            for t in range(k):
                s += values[j, t] * x[m, indices[j, t]]
            out[m, row] = s + b


@njit(fastmath=True, cache=True, inline="always")
def _row_times_tile(values, indices, j, xt, c0, c1, acc):  # pragma: no cover - numba
    """acc[0:c1-c0] = sum_t values[j, t] * xt[indices[j, t], c0:c1], 4 gathered rows a step."""
    k = values.shape[1]
    w = c1 - c0
    for c in range(w):
        acc[c] = 0.0
    t = 0
    while t + 4 <= k:
        i0 = indices[j, t]
        i1 = indices[j, t + 1]
        i2 = indices[j, t + 2]
        i3 = indices[j, t + 3]
        v0 = values[j, t]
        v1 = values[j, t + 1]
        v2 = values[j, t + 2]
        v3 = values[j, t + 3]
        for c in range(w):
            acc[c] += (
                v0 * xt[i0, c0 + c]
                + v1 * xt[i1, c0 + c]
                + v2 * xt[i2, c0 + c]
                + v3 * xt[i3, c0 + c]
            )
        t += 4
    while t < k:
        i0 = indices[j, t]
        v0 = values[j, t]
        for c in range(w):
            acc[c] += v0 * xt[i0, c0 + c]
        t += 1


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def transposed_kernel(values, indices, active, bias, xt, outt):  # pragma: no cover - numba
    """outt[active[j], :] = sum_t values[j, t] * xt[indices[j, t], :] + bias[active[j]].

    xt: float32 [in, B] (activations laid out transposed); outt: float32 [out, B]. Parallel
    over (batch tiles of BT columns) x (halves of the output neurons).
    """
    n = values.shape[0]
    nb = xt.shape[1]
    tiles = (nb + BT - 1) // BT
    splits = 2 if tiles < 4 else 1
    per = (n + splits - 1) // splits
    for task in prange(tiles * splits):
        tile = task // splits
        part = task % splits
        c0 = tile * BT
        c1 = min(nb, c0 + BT)
        acc = np.empty(BT, dtype=np.float32)
        for j in range(part * per, min(n, part * per + per)):
            _row_times_tile(values, indices, j, xt, c0, c1, acc)
            row = active[j]
            b = bias[row]
            for c in range(c1 - c0):
                outt[row, c0 + c] = acc[c] + b


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def tiled_kernel(values, indices, active, bias, x, out):  # pragma: no cover - numba
    """out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]].

    x: float32 [M, in]; out: float32 [M, out]. Parallel over tiles of BT rows of x: each task
    transposes its tile into a cache-resident [in, BT] buffer, runs every output neuron over
    it (4 gathered rows per step) and writes its [BT, out] block of the output.
    """
    n = values.shape[0]
    m_rows, n_in = x.shape
    tiles = (m_rows + BT - 1) // BT
    for tile in prange(tiles):
        r0 = tile * BT
        w = min(m_rows, r0 + BT) - r0
        xt = np.empty((n_in, BT), dtype=np.float32)
        for i0 in range(0, n_in, 64):  # 64 x BT sub-blocks: both sides stay in L1
            i1 = min(n_in, i0 + 64)
            for r in range(w):
                for i in range(i0, i1):
                    xt[i, r] = x[r0 + r, i]
        acc = np.empty(BT, dtype=np.float32)
        for j in range(n):
            _row_times_tile(values, indices, j, xt, 0, w, acc)
            row = active[j]
            b = bias[row]
            for r in range(w):
                out[r0 + r, row] = acc[r] + b
