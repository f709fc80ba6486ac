"""``naive``: gather + multiply + sum in plain torch, from the condensed form."""

from __future__ import annotations

from typing import ClassVar

import torch

from backends import BACKENDS
from backends.condensed import CondensedLinear

# Rows of x per chunk: bounds the [rows, n_active, k] gathered intermediate to ~32 MB.
_CHUNK_ELEMENTS = 8 * 2**20


def gather_linear(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """y[m, j] = sum_t values[j, t] * x[m, indices[j, t]].

    Args:
        x: [M, in]; values: [n, k], x.dtype; indices: int64 [n, k].

    Returns:
        [M, n], x.dtype (bf16/fp16 products are summed by torch in float32).
    """
    return (x[:, indices] * values).sum(dim=-1)


@BACKENDS.register("naive")
class NaiveLinear(CondensedLinear):
    """``y = (x[..., indices] * values).sum(-1)`` scattered into the active neurons, in chunks of
    rows so the gathered intermediate stays small."""

    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        rows = max(1, _CHUNK_ELEMENTS // max(1, self.values.numel()))
        if x.shape[0] <= rows:
            return self.scatter_active(gather_linear(x, self.values, self.indices64))
        y = x.new_empty(x.shape[0], self.n_active)
        for i in range(0, x.shape[0], rows):
            y[i : i + rows] = gather_linear(x[i : i + rows], self.values, self.indices64)
        return self.scatter_active(y)
