"""``semi_structured``: 2:4 layers on the sparse tensor cores of NVIDIA GPUs (sm80+), through
``torch.sparse.to_sparse_semi_structured`` (float16, bfloat16; Linear).

The layer keeps the condensed form of every condensed backend (so its state dict loads into
``fused``, ``naive``, ... and back) and, on CUDA, the masked weight compressed by torch (values
plus 2-bit metadata), zero-padded to the shape multiples torch's kernels need (rows of 32,
columns of 64); an input whose width is not a multiple of 64 is zero-padded per call.
A mask that is not 2:4 (every group of 4 consecutive inputs of a non-ablated neuron keeps
exactly 2) is refused with :class:`NotTwoFourError`; on CPU, without CUDA or on a GPU below
sm80, :meth:`SemiStructuredLinear.available` says why it cannot run.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from backends import BACKENDS
from backends.condensed import CondensedLinear
from backends.nm import is_nm

ROW_MULTIPLE, COL_MULTIPLE = 32, 64  # torch's shape multiples for float16 / bfloat16


class NotTwoFourError(ValueError):
    """The mask is not 2:4; the message names the layer."""


def check_two_four(mask: torch.Tensor, layer_name: str | None = None) -> None:
    """Raise :class:`NotTwoFourError` unless ``mask`` (bool [out, in]) keeps exactly 2 of every
    4 consecutive inputs in each non-ablated row (in a multiple of 4)."""
    if mask.dim() != 2 or mask.shape[1] % 4:
        raise NotTwoFourError(
            f"layer {layer_name!r}: semi_structured needs a 2:4 mask [out, in] with in a "
            f"multiple of 4, got shape {list(mask.shape)}"
        )
    if not is_nm(mask, 2, 4):
        counts = mask.reshape(mask.shape[0], -1, 4).sum(-1)
        bad = ((counts != 2) & mask.any(dim=1, keepdim=True)).nonzero()[0].tolist()
        raise NotTwoFourError(
            f"layer {layer_name!r}: semi_structured needs a 2:4 mask (exactly 2 of every 4 "
            f"consecutive inputs of a non-ablated neuron), but neuron {bad[0]} keeps "
            f"{int(counts[bad[0], bad[1]])} of inputs {4 * bad[1]}..{4 * bad[1] + 3}"
        )


def _round_up(v: int, m: int) -> int:
    return (v + m - 1) // m * m


@BACKENDS.register("semi_structured")
class SemiStructuredLinear(CondensedLinear):
    """2:4 sparse tensor cores (CUDA sm80+, float16/bfloat16) via torch's semi-structured
    sparse tensors; ablated neurons output their bias."""

    devices: ClassVar[tuple[str, ...]] = ("cuda",)
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float16, torch.bfloat16)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """(True, "") on a CUDA GPU of compute capability 8.0 or more, else (False, why)."""
        dev = torch.device(device)
        if dev.type != "cuda":
            return False, (
                f"2:4 semi-structured sparsity runs on the sparse tensor cores of CUDA GPUs "
                f"(sm80+), not on {dev.type}"
            )
        if not torch.cuda.is_available():
            return False, "CUDA is not available on this machine (2:4 needs an sm80+ GPU)"
        if not hasattr(torch.sparse, "to_sparse_semi_structured"):
            return False, f"torch {torch.__version__} has no torch.sparse.to_sparse_semi_structured"
        major, minor = torch.cuda.get_device_capability(dev)
        if major < 8:
            return (
                False,
                f"2:4 sparse tensor cores need compute capability 8.0+, not {major}.{minor}",
            )
        return True, ""

    def _checked_mask(self, weight, mask, bias, **options: Any) -> torch.Tensor:
        """The Linear checks with the 2:4 check first (so a bad mask is named on any device)."""
        if isinstance(mask, torch.Tensor) and isinstance(weight, torch.Tensor):
            if mask.shape == weight.shape:
                check_two_four(mask.bool() if mask.dtype != torch.bool else mask, self.layer_name)
        return super()._checked_mask(weight, mask, bias, **options)

    def _after_load(self) -> None:
        super()._after_load()
        self._sparse = None
        if self.device.type != "cuda" or self.dtype not in self.dtypes:
            return
        dense = torch.zeros(
            self.out_features, self.in_features, dtype=self.dtype, device=self.device
        )
        if self.n_active:
            dense[self.active] = dense[self.active].scatter(1, self.indices64, self.values)
        check_two_four(self._mask(), self.layer_name)  # a loaded state may be any mask
        rows, cols = (
            _round_up(self.out_features, ROW_MULTIPLE),
            _round_up(self.in_features, COL_MULTIPLE),
        )
        padded = F.pad(dense, (0, cols - self.in_features, 0, rows - self.out_features))
        self._sparse = torch.sparse.to_sparse_semi_structured(padded)
        self._bias_padded = F.pad(self.bias, (0, rows - self.out_features))

    def _mask(self) -> torch.Tensor:
        """bool [out, in]: the kept positions of the condensed form."""
        mask = torch.zeros(self.out_features, self.in_features, dtype=torch.bool)
        if self.n_active:
            mask[self.active.cpu()] = mask[self.active.cpu()].scatter(1, self.indices64.cpu(), True)
        return mask

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_sparse", None)
        return state

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        """x [M, in] (float16/bfloat16, CUDA) -> [M, out]."""
        if self._sparse is None:  # a state this backend cannot run (dtype or device)
            raise RuntimeError(
                f"layer {self.layer_name!r}: semi_structured runs float16/bfloat16 on CUDA, "
                f"this layer holds {self.dtype} on {self.device}"
            )
        pad = self._sparse.shape[1] - self.in_features
        xp = F.pad(x, (0, pad)) if pad else x
        y = F.linear(xp, self._sparse, self._bias_padded)
        return y[:, : self.out_features]
