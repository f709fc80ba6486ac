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
torch has oneDNN (``torch.backends.mkldnn.is_available()``).

Conv2d (:class:`DenseMkldnnConv2d`): ``torch._C._nn.mkldnn_reorder_conv2d_weight`` packs the
weight for the input size at hand (per batch bucket, height and width) and
``torch.ops.mkldnn._convolution_pointwise`` runs it, as inductor's freezing does.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from backends import BACKENDS
from backends.base import Backend, BadInputError
from backends.conv import ConvBackend, register_conv
from backends.dense import MaskedDenseForm
from backends.kernels.tune_cache import bucket_of


def _mkldnn_ops_missing(
    ops: tuple[str, ...] = ("_reorder_linear_weight", "_linear_pointwise"),
) -> str:
    """Why torch's oneDNN operators ``ops`` cannot run here ("" when they can)."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (torch.backends.mkldnn.is_available() is False)"
    for op in ops:
        if not hasattr(torch.ops.mkldnn, op):
            return f"torch {torch.__version__} has no torch.ops.mkldnn.{op}"
    return ""


class _PackedWeights:
    """Mixin for the oneDNN backends: ``_packs`` (the packed weights, by input size) starts
    empty on load and is left out of pickles (opaque oneDNN tensors: rebuilt on use)."""

    def _after_load(self) -> None:
        self._packs = {}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_packs", None)
        return state


@BACKENDS.register("dense_mkldnn")
class DenseMkldnnLinear(_PackedWeights, MaskedDenseForm, Backend):
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
        if x.requires_grad and torch.is_grad_enabled():  # the oneDNN op passes no gradient to x
            return F.linear(x, self.weight, self.bias)
        batch = x.numel() // max(self.in_features, 1)
        if batch == 0 or self.in_features == 0 or self.out_features == 0:
            lead = x.shape[:-1]
            return self.bias.expand(*lead, self.out_features).clone()
        packed = self.packed_weight(batch)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.bias, "none", [], "")


@register_conv("dense_mkldnn")
class DenseMkldnnConv2d(_PackedWeights, MaskedDenseForm, ConvBackend):
    """Conv2d through oneDNN with a prepacked weight: ``torch._C._nn.mkldnn_reorder_conv2d_weight``
    of the masked weight (as a ``to_mkldnn()`` tensor) for the input size at hand, then
    ``torch.ops.mkldnn._convolution_pointwise`` (what inductor's freezing emits for a frozen
    ``nn.Conv2d``). Packed lazily per (batch bucket, H, W); float32 on CPU. forward: x float32
    [N, in, H, W] -> [N, out, Ho, Wo] in the memory format oneDNN picks (channels-last here;
    equal values to ``F.conv2d``'s)."""

    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    dense_baseline: ClassVar[bool] = True

    _packs: dict[tuple[int, int, int], torch.Tensor]

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """``(True, "")`` on CPU with torch's oneDNN convolution operators, else why not."""
        ok, why = super().available(device)
        if not ok:
            return ok, why
        missing = _mkldnn_ops_missing(("_convolution_pointwise",))
        if not missing and not hasattr(torch._C._nn, "mkldnn_reorder_conv2d_weight"):
            missing = f"torch {torch.__version__} has no mkldnn_reorder_conv2d_weight"
        return (not missing), missing

    def packed_weight(self, n: int, height: int, width: int) -> torch.Tensor:
        """The oneDNN-packed weight for inputs [n, in, height, width] (per batch bucket)."""
        key = (bucket_of(n), height, width)
        packed = self._packs.get(key)
        if packed is None:
            size = [1 << key[0], self.in_channels, height, width]
            packed = torch._C._nn.mkldnn_reorder_conv2d_weight(
                self.weight.to_mkldnn(),
                list(self.padding),
                list(self.stride),
                list(self.dilation),
                self.groups,
                size,
            )
            self._packs[key] = packed
        return packed

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if self.device.type != "cpu" or self.dtype != torch.float32:
            raise BadInputError(
                f"layer {self.layer_name!r}: dense_mkldnn runs float32 on cpu, the layer is "
                f"{self.dtype} on {self.device}"
            )
        if x.requires_grad and torch.is_grad_enabled():  # the oneDNN op passes no gradient to x
            return F.conv2d(
                x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups
            )
        n, _, height, width = x.shape
        packed = self.packed_weight(n, height, width)
        return torch.ops.mkldnn._convolution_pointwise(
            x,
            packed,
            self.bias,
            list(self.padding),
            list(self.stride),
            list(self.dilation),
            self.groups,
            "none",
            [],
            "",
        )
