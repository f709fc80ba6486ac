"""``dense_mkldnn``: dense Linear through oneDNN with prepacked weights (a strong dense baseline).

Path: ``torch.ops.mkldnn._reorder_linear_weight(weight, batch_size)`` packs the masked weight
once into the blocked layout oneDNN's inner product picks for that batch size (an opaque
``torch._mkldnn`` tensor), and ``torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none",
[], "")`` runs it on an ordinary strided x [..., in]: the same pair of operators inductor emits
for a frozen ``nn.Linear`` on CPU (``torch._inductor.config.freezing``), without compiling.
oneDNN's layout depends on the batch size, so the weight is packed lazily per batch bucket
(1, 2, 3-4, 5-8, ...; the bucket's upper end as the hint) on the first call of that bucket.
The packs are derived data: ``state_dict`` holds the plain masked ``weight`` and ``bias``
(the ``dense`` layout), and copies, ``to()`` and loads drop the packs. float32 on CPU where
torch has oneDNN (``torch.backends.mkldnn.is_available()``); Linear only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from backends import BACKENDS
from backends.base import Backend, BadInputError
from backends.conv import declare_no_conv
from backends.dense import MaskedDenseForm
from backends.kernels.tune_cache import bucket_of


def _mkldnn_ops_missing() -> str:
    """Why torch's oneDNN Linear operators cannot run here ("" when they can)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    for op in ("_reorder_linear_weight", "_linear_pointwise"):
        if not hasattr(torch.ops.mkldnn, op):
            return f"torch {torch.__version__} has no torch.ops.mkldnn.{op}"
    return ""


@BACKENDS.register("dense_mkldnn")
class DenseMkldnnLinear(MaskedDenseForm, Backend):
    """``weight * mask`` as a oneDNN-prepacked weight per batch bucket (module docstring);
    float32 on CPU. forward: x [..., in] float32 -> [..., out] float32."""

    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    dense_baseline: ClassVar[bool] = True

    _packs: dict[int, torch.Tensor]

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """``(True, "")`` on CPU with torch's oneDNN operators, else why not."""
        ok, why = super().available(device)
        if not ok:
            return ok, why
        missing = _mkldnn_ops_missing()
        return (not missing), missing

    def _after_load(self) -> None:
        self._packs = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_packs", None)  # opaque oneDNN tensors: rebuilt on use
        return state

    def packed_weight(self, batch: int) -> torch.Tensor:
        """The oneDNN-packed weight for ``batch`` rows of x (packed on first use per bucket)."""
        bucket = bucket_of(batch)
        packed = self._packs.get(bucket)
        if packed is None:
            packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, 1 << bucket)
            self._packs[bucket] = packed
        return packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 [..., in] (any strides) -> float32 [..., out]."""
        self.check_input(x)
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise BadInputError(
                f"layer {self.layer_name!r}: dense_mkldnn runs float32 on cpu, the layer is "
                f"{self.dtype} on {self.device}"
            )
        batch = x.numel() // max(self.in_features, 1)
        if batch == 0 or self.in_features == 0 or self.out_features == 0:
            lead = x.shape[:-1]
            return self.bias.expand(*lead, self.out_features).clone()
        packed = self.packed_weight(batch)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")


declare_no_conv("dense_mkldnn", "the oneDNN-prepacked dense baseline is Linear only")
