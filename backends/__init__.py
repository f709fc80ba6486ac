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
    "supports",
    "tune",
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
    """Build backend ``name`` from a masked Linear (2-D weight) or Conv2d (4-D weight) layer.

    Args:
        weight: float tensor [out, in], or [out, in/groups, kh, kw] for a convolution.
        mask: bool tensor of the weight's shape (another dtype must hold only 0 and 1, else
            ``BadInputError``: a 0.5 is refused, not read as True); condensed backends require
            constant fan-in (per output channel over in/groups * kh * kw for a convolution).
        bias: float tensor [out] or None.
        layer_name: used in error messages (e.g. a non-constant fan-in mask).
        **kwargs: for a 4-D weight ``stride``, ``padding``, ``dilation``, ``groups`` (and
            ``padding_mode``, which must be "zeros"), as ``nn.Conv2d`` takes them.

    Returns:
        An ``nn.Module`` whose ``forward(x)`` for x [..., in] equals
        ``F.linear(x, weight * mask, bias)``, shape [..., out]; for a 4-D weight x [N, in, H, W]
        -> ``F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups)``.
    """
    cls = get(name)
    if isinstance(weight, torch.Tensor) and weight.dim() == 4:
        return _create_conv(name, weight, mask, bias, layer_name, **kwargs)
    ok, why = cls.available(weight.device)
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable: {why}")
    return cls(weight, mask, bias, layer_name=layer_name, **kwargs)


def _create_conv(name, weight, mask, bias, layer_name, **conv_args) -> Backend:
    """Backend ``name``'s Conv2d module (see :mod:`backends.conv`)."""
    from backends.conv import conv_class, conv_supports

    cls = conv_class(name)
    if cls is None:
        raise BackendUnavailableError(conv_supports(name, weight.device, weight.dtype)[1])
    ok, why = cls.available(weight.device)
    if not ok:
        raise BackendUnavailableError(f"backend {name!r} is unavailable for Conv2d: {why}")
    return cls(weight, mask, bias, layer_name=layer_name, **conv_args)


def supports(
    name: str, device: str | torch.device, dtype: torch.dtype, op: str = "linear"
) -> tuple[bool, str]:
    """Whether backend ``name`` runs ``op`` ("linear" or "conv2d") in ``dtype`` on ``device``:
    ``(True, "")`` or ``(False, reason)``; a backend without a Conv2d module says why."""
    if op == "linear":
        return get(name).supports(device, dtype)
    if op == "conv2d":
        from backends.conv import conv_supports

        return conv_supports(name, device, dtype)
    raise ValueError(f"op must be 'linear' or 'conv2d', got {op!r}")


def tune(
    layer_or_model: torch.nn.Module,
    batches=(1, 197, 256),
    threads: int | None = None,
    force: bool = False,
) -> dict[str, dict[int, str]]:
    """Autotune the ``fused`` CPU layers of a module ahead of time (else it happens on first use).

    Times the kernel variants of every ``fused`` layer for each batch size (rows of x) on
    ``threads`` threads (default: torch's), or reads the winners from this machine's tuning
    cache; ``force`` times again. Returns {module path ("" for the layer itself): {batch:
    variant name}}. Layers of other backends are skipped.
    """
    from backends.fused import FusedLinear

    return {
        path: module.tune(batches, threads=threads, force=force)
        for path, module in layer_or_model.named_modules()
        if isinstance(module, FusedLinear) and module.device.type == "cpu"
    }


import_submodules(__name__, skip=("base", "registry"))

from backends.condensed import FanInError  # noqa: E402  (after the registry exists)
