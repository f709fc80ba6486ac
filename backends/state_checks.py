"""Checks of a loaded layer state (untrusted input: a state dict read from a file).

Every backend's load path (``from_state_dict``, ``load_state_dict``, ``load``) runs
:func:`validate_layer_state` through :meth:`backends.base.Backend.validate_state` before any
kernel sees the buffers. The checks know the buffers by name, so one function covers the dense
forms (``weight``, ``bias``) and the condensed ones (``active``, ``values``, ``indices``,
``bias``). This module imports only torch, so the backend base and the condensed forms both
use it without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import torch


class LayerStateError(ValueError):
    """A loaded layer state (a state dict from a file) does not describe a valid layer; the
    message names the layer, the buffer, what was found and what is allowed."""


INDEX_DTYPES = (torch.int16, torch.int32, torch.int64)


class _Checker:
    """The checks of one state; :meth:`fail` raises with the layer named."""

    def __init__(self, buffers: Mapping[str, Any], where: str) -> None:
        self.buffers, self.where = buffers, where

    def fail(self, msg: str) -> NoReturn:
        raise LayerStateError(f"{self.where}: {msg}")

    def sizes(self, in_features: Any, out_features: Any) -> None:
        for key, size in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size < 2**31:
                self.fail(f"{key}={size!r} is invalid; allowed: an int with 1 <= {key} < 2**31")

    def tensors(self) -> None:
        """Every buffer a strided tensor; one device; one float dtype."""
        devices, floats = set(), set()
        for key, t in self.buffers.items():
            if not isinstance(t, torch.Tensor):
                self.fail(f"buffer {key!r} is a {type(t).__name__}; allowed: a tensor")
            if t.layout != torch.strided:
                self.fail(f"buffer {key!r} has layout {t.layout}; allowed: torch.strided")
            devices.add(t.device)
            if t.is_floating_point():
                floats.add(t.dtype)
        if len(devices) > 1:
            found = sorted(map(str, devices))
            self.fail(f"buffers on several devices {found}; allowed: one device")
        if len(floats) > 1:
            self.fail(
                f"float buffers of several dtypes {sorted(map(str, floats))}; allowed: one dtype"
            )

    def shape_of(self, key: str, want: tuple[int, ...], kind: str) -> torch.Tensor | None:
        """Buffer ``key`` (None if absent) of shape ``want``; kind "float" or "index"."""
        t = self.buffers.get(key)
        if t is None:
            return None
        ok = t.is_floating_point() if kind == "float" else t.dtype in INDEX_DTYPES
        if not ok:
            allowed = "a floating dtype" if kind == "float" else "int16, int32 or int64"
            self.fail(f"buffer {key!r} has dtype {t.dtype}; allowed: {allowed}")
        if tuple(t.shape) != want:
            self.fail(f"buffer {key!r} has shape {list(t.shape)}; allowed: {list(want)}")
        return t

    def active(self, out_features: int) -> int:
        """Check ``active``; the number of active neurons (``out_features`` without it)."""
        active = self.buffers.get("active")
        if active is None:
            return out_features
        if active.dim() != 1 or active.numel() > out_features:
            self.fail(
                f"buffer 'active' has shape {list(active.shape)}; allowed: [n_active] with "
                f"n_active <= out_features={out_features}"
            )
        if active.dtype != torch.int64:
            self.fail(f"buffer 'active' has dtype {active.dtype}; allowed: torch.int64")
        n_active = active.numel()
        if n_active:
            lo, hi = int(active.min()), int(active.max())
            if lo < 0 or hi >= out_features:
                self.fail(
                    f"buffer 'active' holds neurons {lo}..{hi}; allowed: 0 <= active < "
                    f"out_features={out_features}"
                )
            if n_active > 1 and not bool((active[1:] > active[:-1]).all()):
                self.fail(
                    "buffer 'active' is not strictly ascending (repeated or unsorted "
                    "neurons); allowed: unique neuron indices in ascending order"
                )
        return n_active

    def values_and_indices(self, n_active: int, width: int) -> None:
        """``values`` [n_active, k] with 1 <= k <= width; ``indices`` of its shape, in
        [0, width), no repeated column per row; both or neither."""
        values = self.buffers.get("values")
        if values is None:
            if "indices" in self.buffers:
                self.fail("buffer 'indices' without 'values'; allowed: both or neither")
            return
        if values.dim() != 2:
            self.fail(f"buffer 'values' has shape {list(values.shape)}; allowed: [n_active, k]")
        k = int(values.shape[1])
        if k > width or (n_active > 0 and k < 1):
            self.fail(f"buffer 'values' has k={k} per neuron; allowed: 1 <= k <= fan-in {width}")
        self.shape_of("values", (n_active, k), "float")
        if self.buffers.get("indices") is None:
            self.fail("buffer 'indices' is missing; allowed: int indices of the shape of 'values'")
        indices = self.shape_of("indices", (n_active, k), "index")
        if not indices.numel():
            return
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= width:
            self.fail(f"buffer 'indices' holds columns {lo}..{hi}; allowed: 0 <= indices < {width}")
        if k > 1:
            srt = indices.to(torch.int64).sort(dim=1).values
            if bool((srt[:, 1:] == srt[:, :-1]).any()):
                self.fail(
                    "buffer 'indices' repeats a column within a neuron; allowed: k distinct "
                    "columns per neuron"
                )


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

    It checks the buffers it knows by name, so one function covers every layout built from them:

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
    check = _Checker(buffers, where)
    check.sizes(in_features, out_features)
    check.tensors()
    check.shape_of("bias", (out_features,), "float")
    n_active = check.active(out_features)
    check.values_and_indices(n_active, in_features if fan_in is None else fan_in)
    if "weight" in buffers:
        check.shape_of("weight", (n_active, in_features), "float")
