"""The condensed form of a constant fan-in Linear layer, shared by the sparse backends.

A masked Linear layer ``(weight [out, in], mask [out, in], bias [out])`` whose non-ablated rows
(neurons) all keep the same number ``k`` of non-zeros condenses to

- ``active``  int64 [n_active]: indices of the non-ablated neurons, ascending;
- ``values``  float [n_active, k]: their kept weights;
- ``indices`` int32 [n_active, k]: the input column of each kept weight, ascending per row;
- ``bias``    float [out]: the full bias (zeros when the layer has none).

Output: ``y[..., active[j]] = sum_t values[j, t] * x[..., indices[j, t]] + bias[active[j]]``;
an ablated neuron outputs its bias alone. Rows keeping k or k + 1 non-zeros (SRigL after
ablation spends its whole budget) condense at k + 1, a zero-valued slot in each row keeping k.

Save and load: ``torch.save(layer.state_dict(), p)``; then either
``backends.get(name).from_state_dict(torch.load(p, weights_only=True))`` or
``existing_layer.load_state_dict(...)`` (buffers are resized to the saved shapes). Every
condensed backend has the same state-dict keys (``active``, ``values``, ``indices``, ``bias``,
``_extra_state``), so a layer saved from one backend loads into another.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from backends.base import Backend, check_layer
from backends.state_checks import LayerStateError, validate_layer_state

__all__ = [
    "CondensedForm",
    "CondensedLinear",
    "FanInError",
    "LayerStateError",
    "condense_layer",
    "fan_in_problem",
    "validate_layer_state",
]


class FanInError(ValueError):
    """The mask is not constant fan-in (rows k or k + 1 are); the message names the layer and
    the fan-in range."""


def fan_in_problem(counts: torch.Tensor, in_features: int) -> str | None:
    """Why rows keeping ``counts`` non-zeros (int [out]; 0 = ablated) do not condense, else
    None: the non-ablated rows must keep k or k + 1 non-zeros (constant fan-in, or SRigL's
    remainder after ablation, condensed at k + 1 with one zero-valued slot)."""
    kept = counts[counts > 0]
    if kept.numel() and int(kept.max()) - int(kept.min()) > 1:
        return (
            f"mask is not constant fan-in: non-ablated rows keep {int(kept.min())}.."
            f"{int(kept.max())} non-zeros (of {in_features}); condensed backends need the same "
            "count k in every non-ablated row, or k and k + 1"
        )
    return None


def condense_layer(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    layer_name: str | None = None,
    checked: bool = False,
) -> dict[str, torch.Tensor]:
    """Condense a masked Linear layer with constant fan-in.

    A mask whose non-ablated rows keep k or k + 1 non-zeros (SRigL's layers after ablation
    hold their whole budget B = k * n_active + r: r rows keep k + 1) condenses at fan-in
    k + 1: each row keeping k gets one slot of value 0 at its first column not in the mask
    (indices stay ascending and distinct), so the output is the masked layer's for finite x (an
    inf or NaN in that column makes the row NaN, 0 * inf, as masked dense ``F.linear`` does).

    Args:
        weight: float tensor [out, in].
        mask: bool or 0/1 tensor [out, in]; every row has 0, k or k + 1 non-zeros.
        bias: float tensor [out] or None (then zeros).
        layer_name: named in the error message.
        checked: the caller already ran :func:`check_layer` (mask is bool [out, in]).

    Returns:
        ``{"active": int64 [n_active], "values": weight.dtype [n_active, k'],
        "indices": int32 [n_active, k'] (ascending per row), "bias": weight.dtype [out]}``,
        k' the largest row count.

    Raises:
        FanInError: non-ablated rows keep counts more than one apart.
    """
    if not checked:
        mask = check_layer(weight, mask, bias, layer_name)
    out_f, in_f = weight.shape
    if in_f >= 2**31:
        raise ValueError(f"layer {layer_name!r}: in_features={in_f} must be < 2**31")
    counts = mask.sum(dim=1)
    if (why := fan_in_problem(counts, in_f)) is not None:
        raise FanInError(f"layer {layer_name!r}: {why} (use backend 'dense' or 'structured')")
    active = torch.nonzero(counts > 0).flatten()
    k = int(counts[active].max()) if active.numel() > 0 else 0
    rows = mask[active]
    slots = rows
    short = torch.nonzero(counts[active] < k).flatten()
    if short.numel():
        slots = rows.clone()
        free = (~rows[short]).to(torch.uint8).argmax(dim=1)  # first column not in the row
        slots[short, free] = True
    cols = torch.nonzero(slots)[:, 1].reshape(active.numel(), k)  # row-major: sorted per row
    values = torch.gather(weight.detach()[active], 1, cols)
    if short.numel():
        values = values.masked_fill(~torch.gather(rows, 1, cols), 0)
    full_bias = (
        bias.detach().clone() if bias is not None else torch.zeros_like(weight[:, 0]).detach()
    )
    return {
        "active": active.to(torch.int64),
        "values": values.contiguous(),
        "indices": cols.to(torch.int32).contiguous(),
        "bias": full_bias.contiguous(),
    }


class CondensedForm:
    """The buffers of the condensed form and what follows from them, shared by the condensed
    Linear layers and the condensed Conv2d modules (mixed in before the backend base class).

    ``values`` holds the weights (the layer's dtype and device), ``[n_active, k]``.
    """

    state_buffers: ClassVar[tuple[str, ...]] = ("active", "values", "indices", "bias")
    weights_buffer: ClassVar[str] = "values"

    active: torch.Tensor
    values: torch.Tensor
    indices: torch.Tensor
    bias: torch.Tensor
    layer_name: str | None

    @property
    def k(self) -> int:
        """Fan-in of the stored rows: the constant fan-in of the non-ablated neurons (output
        channels), or k + 1 where some keep k (they hold a zero-valued slot)."""
        return self.values.shape[1]

    @property
    def n_active(self) -> int:
        """Number of non-ablated neurons (output channels)."""
        return self.values.shape[0]

    def _build(
        self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """:func:`condense_layer` of the checked layer, its fan-in dims flattened (a conv
        weight [out, in/groups, kh, kw] condenses as [out, in/groups * kh * kw])."""
        return condense_layer(
            weight.flatten(1), mask.flatten(1), bias, self.layer_name, checked=True
        )


class CondensedLinear(CondensedForm, Backend):
    """Base of the backends that compute from the condensed form (see the module docstring).

    Subclasses implement :meth:`_forward_2d` (x [M, in] -> y [M, out]) and may override
    :meth:`_after_load` to derive kernel-specific copies (call ``super()._after_load()``).
    """

    def _after_load(self) -> None:
        n = self.active.numel()
        self._all_active = n == self.out_features  # active is ascending and unique
        self.register_buffer("indices64", self.indices.to(torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight * mask, bias)`` for x [..., in] -> [..., out], x.dtype."""
        self.check_input(x)
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        if x2.shape[0] == 0:
            return self.bias.expand(*lead, self.out_features).clone()
        y = self._forward_2d(x2)
        return y.reshape(*lead, self.out_features)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def scatter_active(self, y_active: torch.Tensor) -> torch.Tensor:
        """Full output [M, out] from the active neurons' outputs y_active [M, n_active] (no
        bias yet): adds the bias and fills ablated neurons with their bias."""
        if self._all_active:
            return y_active + self.bias
        out = self.bias.expand(y_active.shape[0], self.out_features).clone()
        if self.n_active:
            out.index_copy_(1, self.active, y_active + self.bias[self.active])
        return out

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"n_active={self.n_active}, k={self.k}, dtype={self.dtype}"
        )
