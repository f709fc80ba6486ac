"""numba CPU kernels of the ``fused`` backend (imported lazily: numba is optional).

Every kernel takes the condensed layer -- ``values`` float32 [n, k], ``indices`` uint16/uint32
[n, k] sorted within each row (the int16/int32 buffers viewed as unsigned: same bits, and
unsigned indices spare the negative-index wrap-around check in every gather), ``active`` int64
[n], ``bias`` float32 [out] -- and writes only the rows ``active`` of the output; the caller
pre-fills ablated neurons with their bias. ``cache=True``: a process reuses the machine code of
the previous one.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

# Batch columns per tile of the batched kernels: a [in, BT] float32 copy of the input tile
# (3072 x 32 x 4 B = 384 KiB) stays in the 1 MiB L2 while every output row gathers from it;
# each gathered row is 32 floats = 2 AVX-512 vectors.
BT = 32
# Output neurons per block of the tiled kernel's output buffer ([RB, BT] floats = 8 KiB: L1).
RB = 64


@njit(fastmath=True, cache=True, inline="always")
def _row_dot(values, indices, j, xm):  # pragma: no cover - numba
    """sum_t values[j, t] * xm[indices[j, t]] (xm: one input vector [in])."""
    s = np.float32(0.0)
    for t in range(values.shape[1]):
        s += values[j, t] * xm[indices[j, t]]
    return s


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def rows_kernel(values, indices, active, bias, x, out):  # pragma: no cover - numba
    """out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]].

    x: float32 [M, in]; out: float32 [M, out]. Parallel over output neurons, for small M.
    """
    for j in prange(values.shape[0]):
        row = active[j]
        for m in range(x.shape[0]):
            out[m, row] = _row_dot(values, indices, j, x[m]) + bias[row]


@njit(fastmath=True, cache=True, nogil=True)
def rows_kernel_serial(values, indices, active, bias, x, out):  # pragma: no cover - numba
    """:func:`rows_kernel` on the calling thread (tiny layers: no parallel start-up cost)."""
    for j in range(values.shape[0]):
        row = active[j]
        for m in range(x.shape[0]):
            out[m, row] = _row_dot(values, indices, j, x[m]) + bias[row]


@njit(fastmath=True, cache=True, inline="always")
def _row_times_tile(values, indices, j, xt, w, acc):  # pragma: no cover - numba
    """acc[0:w] = sum_t values[j, t] * xt[indices[j, t], 0:w], 4 gathered rows per step."""
    k = values.shape[1]
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
            acc[c] += (v0 * xt[i0, c] + v1 * xt[i1, c]) + (v2 * xt[i2, c] + v3 * xt[i3, c])
        t += 4
    while t < k:
        i0 = indices[j, t]
        v0 = values[j, t]
        for c in range(w):
            acc[c] += v0 * xt[i0, c]
        t += 1


@njit(cache=True, inline="always")
def _split(n_tiles, n_rows, threads):  # pragma: no cover - numba
    """Row blocks per batch tile so that there are at least 2 tasks per thread."""
    want = 2 * threads
    return max(1, min(n_rows, (want + n_tiles - 1) // n_tiles))


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def tiled_kernel(values, indices, active, bias, x, out, threads):  # pragma: no cover - numba
    """out[m, active[j]] = sum_t values[j, t] * x[m, indices[j, t]] + bias[active[j]].

    x: float32 [M, in]; out: float32 [M, out]; threads: numba's thread count. Parallel over
    (tiles of BT rows of x) x (blocks of output neurons): a task transposes its tile into a
    cache-resident [in, BT] buffer, runs its neurons over it (4 gathered input rows per step)
    into a [RB, BT] block and writes each block back transposed (writing out[:, j] directly
    would store BT values out_features apart: one cache set when out_features * 4 is a
    multiple of 4 KiB).
    """
    n = values.shape[0]
    m_rows, n_in = x.shape
    tiles = (m_rows + BT - 1) // BT
    splits = _split(tiles, n, threads)
    per = (n + splits - 1) // splits
    for task in prange(tiles * splits):
        tile = task // splits
        j0 = (task % splits) * per
        j1 = min(n, j0 + per)
        r0 = tile * BT
        w = min(m_rows, r0 + BT) - r0
        xt = np.empty((n_in, BT), dtype=np.float32)
        for i0 in range(0, n_in, 64):  # 64 x BT blocks: both sides stay in L1
            for r in range(w):
                for i in range(i0, min(n_in, i0 + 64)):
                    xt[i, r] = x[r0 + r, i]
        ob = np.empty((RB, BT), dtype=np.float32)
        for jb in range(j0, j1, RB):
            je = min(j1, jb + RB)
            for j in range(jb, je):
                _row_times_tile(values, indices, j, xt, w, ob[j - jb])
            for r in range(w):
                for j in range(jb, je):
                    row = active[j]
                    out[r0 + r, row] = ob[j - jb, r] + bias[row]


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def transposed_kernel(
    values, indices, active, bias, xt_in, outt, threads
):  # pragma: no cover - numba
    """outt[active[j], :] = sum_t values[j, t] * xt_in[indices[j, t], :] + bias[active[j]].

    xt_in: float32 [in, B] (activations laid out transposed); outt: float32 [out, B]. Tasks as
    in :func:`tiled_kernel`; each copies its BT columns into a contiguous [in, BT] buffer first
    (rows of xt_in are B floats apart: gathering from them directly conflicts in the caches).
    """
    n = values.shape[0]
    n_in, nb = xt_in.shape
    tiles = (nb + BT - 1) // BT
    splits = _split(tiles, n, threads)
    per = (n + splits - 1) // splits
    for task in prange(tiles * splits):
        tile = task // splits
        j0 = (task % splits) * per
        c0 = tile * BT
        w = min(nb, c0 + BT) - c0
        xt = np.empty((n_in, BT), dtype=np.float32)
        for i in range(n_in):
            for c in range(w):
                xt[i, c] = xt_in[i, c0 + c]
        acc = np.empty(BT, dtype=np.float32)
        for j in range(j0, min(n, j0 + per)):
            _row_times_tile(values, indices, j, xt, w, acc)
            row = active[j]
            for c in range(w):
                outt[row, c0 + c] = acc[c] + bias[row]
