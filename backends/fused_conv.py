"""``fused`` Conv2d: a direct C++ kernel on CPU, unfold + the Triton kernel on CUDA.

CPU (float32): ``backends/kernels/conv_direct.cpp``, built on first use with
``torch.utils.cpp_extension`` (needs a C++ compiler; cached per machine). It computes the
convolution directly from the condensed taps without an im2col copy: stride 1 without padding
reads the input in place; otherwise the input is copied once into zero-padded (stride 1) or
phase-split (stride > 1) planes of the input's size. Per input size the taps' offsets into
those planes are computed once and cached on the module.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import torch

from backends.base import BadInputError
from backends.conv import CondensedConv2d, register_conv

log = logging.getLogger(__name__)

KERNEL_SOURCE = Path(__file__).with_name("kernels") / "conv_direct.cpp"
_EXT: dict[str, Any] = {"module": None, "error": None}
_LOCK = threading.Lock()


def _compiler_available() -> tuple[bool, str]:
    from torch._inductor import cpp_builder

    try:
        cpp_builder.get_cpp_compiler()
    except Exception as err:  # inductor raises a bare RuntimeError without a compiler
        return False, f"the direct conv kernel needs a C++ compiler: {err}"
    return True, ""


def conv_extension() -> ModuleType:
    """The compiled direct-conv extension (built on first call, then cached per machine).

    Raises:
        RuntimeError: the build failed (the message carries the compiler's reason).
    """
    with _LOCK:
        if _EXT["module"] is not None:
            return _EXT["module"]
        if _EXT["error"] is not None:
            raise RuntimeError(_EXT["error"])
        from torch.utils.cpp_extension import load

        flags = ["-O3", "-fopenmp"]
        if os.environ.get("SRIGL_PORTABLE_KERNELS", "0") != "1":
            flags.append("-march=native")
        log.info("building the direct conv kernel %s (%s)", KERNEL_SOURCE, " ".join(flags))
        try:
            mod = load(
                name="srigl_conv_direct",
                sources=[str(KERNEL_SOURCE)],
                extra_cflags=flags,
                extra_ldflags=["-fopenmp"],
                verbose=False,
            )
        except Exception as err:
            _EXT["error"] = f"building {KERNEL_SOURCE.name} failed: {err}"
            raise RuntimeError(_EXT["error"]) from err
        _EXT["module"] = mod
        return mod


def tap_offsets(
    indices: torch.Tensor,
    active: torch.Tensor,
    out_channels: int,
    groups: int,
    cin_per_group: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    dilation: tuple[int, int],
    plane_hw: tuple[int, int],
) -> torch.Tensor:
    """int32 [n, k]: each tap's offset into one image's planes (see conv_direct.cpp).

    Args:
        indices: int [n, k], group-local fan-in indices c * kh * kw + dy * kw + dx;
        active: int64 [n] output channels; plane_hw: (Hq, Wq) of the planes.
    """
    kh, kw = kernel_size
    sh, sw = stride
    dh, dw = dilation
    hq, wq = plane_hw
    idx = indices.to(torch.int64)
    c_local, rem = idx // (kh * kw), idx % (kh * kw)
    dy, dx = rem // kw, rem % kw
    group = active.to(torch.int64) // (out_channels // groups)
    c = group[:, None] * cin_per_group + c_local
    plane = c * (sh * sw) + ((dy * dh) % sh) * sw + (dx * dw) % sw
    off = plane * (hq * wq) + ((dy * dh) // sh) * wq + (dx * dw) // sw
    if off.numel() and int(off.max()) >= 2**31:
        raise ValueError(f"conv planes too large for int32 offsets ({int(off.max())})")
    return off.to(torch.int32).contiguous()


@register_conv("fused")
class FusedConv2d(CondensedConv2d):
    """Direct C++ kernel on CPU (float32); unfold + the Triton condensed kernel on CUDA."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)
    slow_to_build: ClassVar[bool] = False  # one C++ build per machine (~1 min), then cached

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        ok, why = super().available(device)
        if not ok:
            return ok, why
        if torch.device(device).type == "cuda":
            from backends.fused_triton import triton_available

            return triton_available(device)
        if _EXT["error"] is not None:
            return False, _EXT["error"]
        return _compiler_available()

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        ok, why = super().supports(device, dtype)
        if ok and torch.device(device).type == "cpu" and dtype != torch.float32:
            return False, f"the direct C++ conv kernel computes float32 only, not {dtype}"
        return ok, why

    def _after_load(self) -> None:
        super()._after_load()
        self._offsets: dict[tuple[int, int], torch.Tensor] = {}
        inner = None
        if self.device.type == "cuda":
            from backends.conv import UnfoldTritonConv2d

            inner = UnfoldTritonConv2d.from_state_dict(self.state_dict(), self.layer_name)
        object.__setattr__(self, "_inner", inner)  # derived, not a submodule (no state)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_inner", None)
        state.pop("_offsets", None)
        return state

    def _plane_geometry(self, height: int, width: int) -> tuple[bool, int, int]:
        """(in place, Hq, Wq): whether x is read in place, and the planes' size."""
        (sh, sw), (ph, pw) = self.stride, self.padding
        if (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
            return True, height, width
        return False, -(-(height + 2 * ph) // sh), -(-(width + 2 * pw) // sw)

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_cuda:
            return self._inner(x)
        if self.dtype != torch.float32:
            raise BadInputError(
                f"layer {self.layer_name!r}: the direct C++ conv kernel computes float32 only, "
                f"this layer holds {self.dtype}"
            )
        ext = conv_extension()
        n, _, h, w = x.shape
        ho, wo = self.output_size(h, w)
        in_place, hq, wq = self._plane_geometry(h, w)
        offs = self._offsets.get((h, w))
        if offs is None:
            offs = tap_offsets(
                self.indices,
                self.active,
                self.out_features,
                self.groups,
                self.in_channels // self.groups,
                self.kernel_size,
                self.stride,
                self.dilation,
                (hq, wq),
            )
            self._offsets[(h, w)] = offs
        x = x.detach().contiguous()
        if in_place:
            src, img = x, self.in_channels * h * w
        else:
            (sh, sw), (ph, pw) = self.stride, self.padding
            src = ext.conv_planes(x, sh, sw, ph, pw, hq, wq)
            img = self.in_channels * sh * sw * hq * wq
        return ext.conv_direct(
            src,
            n,
            img,
            offs,
            self.values,
            self.active,
            self.bias,
            self._all_active,
            ho,
            wo,
            wq,
            not in_place,
        )
