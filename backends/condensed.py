"""The condensed form of a constant fan-in Linear layer, shared by the sparse backends.

A masked Linear layer ``(weight [out, in], mask [out, in], bias [out])`` whose non-ablated rows
(neurons) all keep the same number ``k`` of non-zeros condenses to

- ``active``  int64 [n_active]: indices of the non-ablated neurons, ascending;
- ``values``  float [n_active, k]: their kept weights;
- ``indices`` int32 [n_active, k]: the input column of each kept weight, ascending per row;
- ``bias``    float [out]: the full bias (zeros when the layer has none).

Output: ``y[..., active[j]] = sum_t values[j, t] * x[..., indices[j, t]] + bias[active[j]]``;
an ablated neuron outputs its bias alone.

Save and load: ``torch.save(layer.state_dict(), p)``; then either
``backends.get(name).from_state_dict(torch.load(p, weights_only=True))`` or
``existing_layer.load_state_dict(...)`` (buffers are resized to the saved shapes). Every
condensed backend has the same state-dict keys (``active``, ``values``, ``indices``, ``bias``,
``_extra_state``), so a layer saved from one backend loads into another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from backends.base import Backend, check_layer


class FanInError(ValueError):
    """The mask is not constant fan-in; the message names the layer and the fan-in range."""


def condense_layer(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    layer_name: str | None = None,
    checked: bool = False,
) -> dict[str, torch.Tensor]:
    """Condense a masked Linear layer with constant fan-in.

    Args:
        weight: float tensor [out, in].
        mask: bool or 0/1 tensor [out, in]; every row has either 0 or exactly k non-zeros.
        bias: float tensor [out] or None (then zeros).
        layer_name: named in the error message.
        checked: the caller already ran :func:`check_layer` (mask is bool [out, in]).

    Returns:
        ``{"active": int64 [n_active], "values": weight.dtype [n_active, k],
        "indices": int32 [n_active, k] (ascending per row), "bias": weight.dtype [out]}``.

    Raises:
        FanInError: non-ablated rows keep different numbers of non-zeros.
    """
    if not checked:
        mask = check_layer(weight, mask, bias, layer_name)
    out_f, in_f = weight.shape
    if in_f >= 2**31:
        raise ValueError(f"layer {layer_name!r}: in_features={in_f} must be < 2**31")
    counts = mask.sum(dim=1)
    active = torch.nonzero(counts > 0).flatten()
    if active.numel() > 0:
        lo, hi = int(counts[active].min()), int(counts[active].max())
        if lo != hi:
            raise FanInError(
                f"layer {layer_name!r}: mask is not constant fan-in: non-ablated rows keep "
                f"{lo}..{hi} non-zeros (of in_features={in_f}); condensed backends need the "
                "same count in every non-ablated row (use backend 'dense' or 'structured')"
            )
    k = int(counts[active[0]]) if active.numel() > 0 else 0
    rows = mask[active]
    cols = torch.nonzero(rows)[:, 1].reshape(active.numel(), k)  # row-major: sorted per row
    values = torch.gather(weight.detach()[active], 1, cols).contiguous()
    full_bias = (
        bias.detach().clone() if bias is not None else torch.zeros_like(weight[:, 0]).detach()
    )
    return {
        "active": active.to(torch.int64),
        "values": values,
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
        """Constant fan-in of the non-ablated neurons (output channels)."""
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


class LayerStateError(ValueError):
    """A loaded layer state (a state dict from a file) does not describe a valid layer; the
    message names the layer, the buffer, what was found and what is allowed."""


_INDEX_DTYPES = (torch.int16, torch.int32, torch.int64)


def validate_layer_state(
    buffers: Mapping[str, Any],
    in_features: Any,
    out_features: Any,
    *,
    layer_name: str | None = None,
    owner: str = "layer",
    fan_in: int | None = None,
) -> None:
    """Check a layer state read from elsewhere before any kernel sees it (untrusted input).

    Every backend's load path (``from_state_dict``, ``load_state_dict``) calls it through
    :meth:`backends.base.Backend.validate_state`. It checks the buffers it knows by name, so one
    function covers every layout built from them:

    - ``in_features``, ``out_features``: ints, 1 <= value < 2**31;
    - every buffer: a dense (strided) tensor, all on one device; float buffers share one dtype;
    - ``bias``: float [out];
    - ``active``: int64 [n_active], n_active <= out, strictly ascending (so unique),
      ``0 <= active < out``;
    - ``values``: float [n_active, k] (n_active = out without ``active``), k <= fan_in, and
      k >= 1 when n_active > 0;
    - ``indices``: int16/32/64 of the shape of ``values``, ``0 <= indices < fan_in``, no
      repeated column within a row;
    - ``weight``: float [n_active, in] (``structured``) or [out, in] (``dense``).

    Args:
        buffers: {buffer name: value} as loaded (values of any type: they are checked).
        in_features, out_features: the layer's sizes from its extra state.
        layer_name: named in the message. owner: the backend class, named in the message.
        fan_in: the number of input positions per neuron that ``indices`` point into
            (default ``in_features``; a conv's is in/groups*kh*kw).

    Raises:
        LayerStateError: the first check that fails; the message names the buffer, what was
            found and what is allowed.
    """
    where = f"{owner} layer {layer_name!r}" if layer_name else f"{owner} layer"

    def fail(msg: str) -> None:
        raise LayerStateError(f"{where}: {msg}")

    for key, size in (("in_features", in_features), ("out_features", out_features)):
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < 2**31:
            fail(f"{key}={size!r} is invalid; allowed: an int with 1 <= {key} < 2**31")
    width = in_features if fan_in is None else fan_in
    devices, floats = set(), set()
    for key, t in buffers.items():
        if not isinstance(t, torch.Tensor):
            fail(f"buffer {key!r} is a {type(t).__name__}; allowed: a tensor")
        if t.layout != torch.strided:
            fail(f"buffer {key!r} has layout {t.layout}; allowed: torch.strided")
        devices.add(t.device)
        if t.is_floating_point():
            floats.add(t.dtype)
    if len(devices) > 1:
        fail(f"buffers on several devices {sorted(map(str, devices))}; allowed: one device")
    if len(floats) > 1:
        fail(f"float buffers of several dtypes {sorted(map(str, floats))}; allowed: one dtype")

    def shape_of(key: str, want: tuple[int, ...], kind: str) -> torch.Tensor | None:
        t = buffers.get(key)
        if t is None:
            return None
        ok = t.is_floating_point() if kind == "float" else t.dtype in _INDEX_DTYPES
        if not ok:
            allowed = "a floating dtype" if kind == "float" else "int16, int32 or int64"
            fail(f"buffer {key!r} has dtype {t.dtype}; allowed: {allowed}")
        if tuple(t.shape) != want:
            fail(f"buffer {key!r} has shape {list(t.shape)}; allowed: {list(want)}")
        return t

    shape_of("bias", (out_features,), "float")
    n_active = out_features
    active = buffers.get("active")
    if active is not None:
        if active.dim() != 1 or active.numel() > out_features:
            fail(
                f"buffer 'active' has shape {list(active.shape)}; allowed: [n_active] with "
                f"n_active <= out_features={out_features}"
            )
        if active.dtype != torch.int64:
            fail(f"buffer 'active' has dtype {active.dtype}; allowed: torch.int64")
        n_active = active.numel()
        if n_active:
            lo, hi = int(active.min()), int(active.max())
            if lo < 0 or hi >= out_features:
                fail(
                    f"buffer 'active' holds neurons {lo}..{hi}; allowed: 0 <= active < "
                    f"out_features={out_features}"
                )
            if n_active > 1 and not bool((active[1:] > active[:-1]).all()):
                fail(
                    "buffer 'active' is not strictly ascending (repeated or unsorted "
                    "neurons); allowed: unique neuron indices in ascending order"
                )
    values = buffers.get("values")
    if values is not None:
        if values.dim() != 2:
            fail(f"buffer 'values' has shape {list(values.shape)}; allowed: [n_active, k]")
        k = int(values.shape[1])
        if k > width or (n_active > 0 and k < 1):
            fail(f"buffer 'values' has k={k} per neuron; allowed: 1 <= k <= fan-in {width}")
        shape_of("values", (n_active, k), "float")
        indices = buffers.get("indices")
        if indices is None:
            fail("buffer 'indices' is missing; allowed: int indices of the shape of 'values'")
        shape_of("indices", (n_active, k), "index")
        if indices.numel():
            lo, hi = int(indices.min()), int(indices.max())
            if lo < 0 or hi >= width:
                fail(f"buffer 'indices' holds columns {lo}..{hi}; allowed: 0 <= indices < {width}")
            if k > 1:
                srt = indices.to(torch.int64).sort(dim=1).values
                if bool((srt[:, 1:] == srt[:, :-1]).any()):
                    fail(
                        "buffer 'indices' repeats a column within a neuron; allowed: k "
                        "distinct columns per neuron"
                    )
    elif "indices" in buffers:
        fail("buffer 'indices' without 'values'; allowed: both or neither")
    if "weight" in buffers:
        rows = n_active if active is not None else out_features
        shape_of("weight", (rows, in_features), "float")
