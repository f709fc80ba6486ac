"""``csr`` and ``coo``: torch.sparse weights built from the condensed form.

Call forms, measured here (2 threads, fp32, 90% sparsity, ViT-B/16 MLP shapes): with a CSR
weight ``F.linear(x, W)`` was faster at batch 1 (~80 us vs ~100 us for ``addmm``) but 2x slower
than ``torch.addmm(b, W, x.T)`` from batch 8 on; COO has no ``F.linear`` path and only
``addmm`` (~40x slower than dense at batch 1). ``F.linear`` with a CSR weight raises under
``torch.inference_mode()`` ("Cannot set version_counter for inference tensor"), so batch 1 runs
``torch.addmv(b, W, x[0])`` instead: the same sparse matrix-vector kernel, in every grad mode
(on a busy machine it measured no slower than ``F.linear``; noisy).
"""

from __future__ import annotations

import warnings
from typing import ClassVar

import torch

from backends import BACKENDS
from backends.condensed import CondensedLinear


def sparse_weight(layer: CondensedLinear, layout: torch.layout) -> torch.Tensor:
    """The layer's masked weight [out, in] as a sparse tensor of ``layout`` (sparse_coo or
    sparse_csr), values of ``layer.dtype``, ablated rows empty."""
    rows = layer.active.repeat_interleave(layer.k)
    idx = torch.stack([rows, layer.indices64.flatten()])
    size = (layer.out_features, layer.in_features)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse.*beta.*")
        w = torch.sparse_coo_tensor(
            idx, layer.values.flatten(), size, is_coalesced=True, check_invariants=False
        )
        return w.to_sparse_csr() if layout == torch.sparse_csr else w


class _TorchSparseLinear(CondensedLinear):
    """A torch.sparse weight plus the fastest call form per batch size."""

    layout: ClassVar[torch.layout]
    #: batch 1 as a matrix-vector product (addmv); addmm for every other batch
    use_addmv: ClassVar[bool] = False

    def _after_load(self) -> None:
        super()._after_load()
        self.register_buffer("sparse", sparse_weight(self, self.layout), persistent=False)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_addmv and x.shape[0] == 1:
            return torch.addmv(self.bias, self.sparse, x[0]).unsqueeze(0)
        return torch.addmm(self.bias[:, None], self.sparse, x.t()).t()


@BACKENDS.register("csr")
class CSRLinear(_TorchSparseLinear):
    """CSR weight: ``addmv(bias, W, x[0])`` at batch 1, ``addmm(bias, W, x.T).T`` above."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    # torch's CPU CSR matmul (MKL) implements float32 only ("not implemented for 'BFloat16'").
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    layout = torch.sparse_csr
    use_addmv = True


@BACKENDS.register("coo")
class COOLinear(_TorchSparseLinear):
    """COO weight: ``addmm(bias, W, x.T).T`` at every batch (no ``F.linear`` COO path)."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)
    layout = torch.sparse_coo
