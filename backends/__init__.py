"""Condensed-GEMM backends behind one registry.

Every backend computes the same function as ``F.linear(x, weight * mask, bias)``::

    import backends
    backends.names()                          # every registered backend, sorted
    backends.available("fused", device="cpu") # (True, "") or (False, "why not")
    layer = backends.create("fused", weight, mask, bias, layer_name="blocks.0.mlp.fc1")

A new backend is one module in this package with one ``@BACKENDS.register("name")`` class.
Errors: ``UnknownNameError`` (unknown name), ``BackendUnavailableError`` (cannot run here),
``BadInputError`` (wrong shape/dtype/device; a ValueError and a TypeError) and ``FanInError``
(a condensed backend given a mask without constant fan-in; a ValueError).
"""

from __future__ import annotations

import torch

from backends.base import Backend, BackendUnavailableError, BadInputError
from backends.registry import Registry, UnknownNameError, import_submodules

BACKENDS: Registry = Registry("backend")

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendUnavailableError",
    "BadInputError",
    "FanInError",
    "Registry",
    "UnknownNameError",
    "available",
    "create",
    "get",
    "names",
]


def names(pattern: str | None = None) -> list[str]:
    """Every registered backend name, sorted, whether or not it is available here."""
    return BACKENDS.names(pattern)


def get(name: str) -> type[Backend]:
    """The backend class registered as ``name`` (``UnknownNameError`` lists the known ones)."""
    return BACKENDS.get(name)


def available(name: str, device: str | torch.device = "cpu") -> tuple[bool, str]:
    """``(True, "")`` if backend ``name`` can run on ``device`` here, else ``(False, reason)``."""
    return get(name).available(device)


def create(
    name: str,
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None = None,
    layer_name: str | None = None,
    **kwargs,
) -> Backend:
    """Build backend ``name`` from a masked Linear layer.

    Args:
        weight: float tensor [out, in].
        mask: bool (or 0/1) tensor [out, in]; condensed backends require constant fan-in.
        bias: float tensor [out] or None.
        layer_name: used in error messages (e.g. a non-constant fan-in mask).

    Returns:
        An ``nn.Module`` whose ``forward(x)`` for x [..., in] equals
        ``F.linear(x, weight * mask, bias)``, shape [..., out].
    """
    cls = get(name)
    ok, why = cls.available(weight.device)
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
    return cls(weight, mask, bias, layer_name=layer_name, **kwargs)


import_submodules(__name__, skip=("base", "registry"))

from backends.condensed import FanInError  # noqa: E402  (after the registry exists)
