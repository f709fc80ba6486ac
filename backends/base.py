"""The interface every GEMM backend implements.

A backend is an ``nn.Module`` built from a masked dense Linear layer ``(weight, mask, bias)``
whose forward computes ``F.linear(x, weight * mask, bias)`` for ``x`` of shape ``[..., in]``.
Each backend class declares the devices and dtypes it supports; :meth:`Backend.available`
says whether it can run here and, if not, why.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn


class BackendUnavailableError(RuntimeError):
    """Raised when a backend is created where it cannot run; the message says why."""


class Backend(nn.Module):
    """Base class of the GEMM backends.

    Subclasses set ``devices`` (e.g. ``("cpu", "cuda")``) and ``dtypes`` and implement
    ``__init__(weight, mask, bias, layer_name=None)`` and ``forward(x)``. They may override
    :meth:`available` to check optional libraries (numba, Triton, CUDA).
    """

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """Whether this backend runs on ``device`` here: ``(True, "")`` or ``(False, reason)``."""
        dev = torch.device(device).type
        if dev not in cls.devices:
            return False, f"{cls.__name__} supports devices {cls.devices}, not {dev!r}"
        if dev == "cuda" and not torch.cuda.is_available():
            return False, "CUDA is not available on this machine"
        return True, ""
