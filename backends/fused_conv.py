"""``fused`` Conv2d: a direct C++ kernel on CPU, unfold + the Triton kernel on CUDA.

CPU (float32): the ``srigl_conv`` operators of ``backends/kernels/csrc/conv_*.cpp`` (built on
first use with :func:`backends.kernels.build.load_extension`, cached per machine; generic,
AVX2 and AVX-512 micro-kernels chosen at run time). They compute the convolution directly from
the condensed taps without an im2col copy: stride 1 without padding reads the input in place;
otherwise the input is copied once into zero-padded (stride 1) or phase-split (stride > 1)
planes of the input's size. Per input size the taps' offsets into those planes are computed
once and cached on the module, and the micro-kernel variant is chosen by the autotuner
(:mod:`backends.kernels.conv_tuner`, per machine; ``SRIGL_TUNE=off``: the default variant). The
tuner also times a dense fallback (``F.conv2d`` on the masked weight rebuilt from the condensed
form): layers dense enough for oneDNN to win run that way (``chosen_variants()`` says which ran;
``SRIGL_CONV_DENSE_FALLBACK=off`` keeps every layer on the direct kernel). A 1x1 convolution
(no groups, no padding) has one more candidate: the fused linear layer over its pixels
(``LINEAR_VARIANT``; ``SRIGL_CONV_LINEAR=off`` removes it).

The direct kernel has no backward: where a gradient is needed (x or the values require grad,
grad mode on), the layer runs ``F.conv2d`` on the masked weight rebuilt from the values, so the
gradient is right (never a cut graph), at dense speed.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from backends.base import BadInputError
from backends.conv import CondensedConv2d, register_conv
from backends.hot_path import grad_needed, kernel_residual
from backends.kernels.build import Extension
from backends.kernels.conv_tuner import ISAS, best_variant, bucket_of
from backends.kernels.conv_tuner import SOURCES as CONV_SOURCES
from backends.kernels.parallel_mode import on_team

log = logging.getLogger(__name__)

SOURCES = CONV_SOURCES  # the extension's sources: one list, the tuner's (its cache key)
# Variant code of the dense fallback: F.conv2d (oneDNN) on the rebuilt masked weight. The tuner
# times it with the direct kernel's variants, so a layer dense enough for oneDNN to win (ERK
# gives small early layers ~50% density) runs dense; SRIGL_CONV_DENSE_FALLBACK=off removes it.
DENSE_VARIANT = -2
# Variant code of a 1x1 convolution (groups 1, no padding) run as the fused linear layer on the
# image's pixels: x [C, H*W] is the linear's transposed input (``forward_transposed``), whose
# register-tile kernels the linear tuner has tuned; timed with the direct kernel's variants.
# On ResNet-50's 1x1 convs at 24% density and below it ran 1.5-2.3x faster than the direct
# kernel (dev, batch 1, 2 threads); SRIGL_CONV_LINEAR=off removes it.
LINEAR_VARIANT = -3
# Plans kept per layer (input shape x thread count), least recently used dropped first: a
# model fed many input sizes (detection, variable crops) does not grow without bound.
MAX_PLANS = 32


def dense_fallback() -> bool:
    """Whether the tuner may pick the dense fallback (``SRIGL_CONV_DENSE_FALLBACK``, on)."""
    value = os.environ.get("SRIGL_CONV_DENSE_FALLBACK", "on").strip().lower()
    return value not in ("off", "0", "false", "no")


def linear_candidate() -> bool:
    """Whether the tuner may run 1x1 convolutions as the fused linear (``SRIGL_CONV_LINEAR``,
    on)."""
    value = os.environ.get("SRIGL_CONV_LINEAR", "on").strip().lower()
    return value not in ("off", "0", "false", "no")


def _setup(ops: Any) -> None:
    _register_fakes()
    log.info("direct conv kernel loaded (ISA %s)", ISAS[int(ops.conv_isa())])


def conv_ops() -> Any:
    """``torch.ops.srigl_conv`` (the extension is built on first call, then cached per machine).

    Raises:
        KernelUnavailableError: the build failed or cannot happen here (the message says why).
    """
    return _EXT.load()


def _register_fakes() -> None:
    """Shape functions of the operators for FakeTensor tracing (torch.compile, export)."""

    @torch.library.register_fake("srigl_conv::conv_planes")
    def _(x, sh, sw, ph, pw, hq, wq, plane_stride=-1):
        per_plane = hq * wq if plane_stride < 0 else plane_stride
        return x.new_empty((x.shape[0] * x.shape[1] * sh * sw * per_plane + 256,))

    @torch.library.register_fake("srigl_conv::conv_direct")
    def _(
        src,
        n_img,
        img_stride,
        offs,
        values,
        active,
        bias,
        all_active,
        ho,
        wo,
        wq,
        padded,
        v,
        residual=None,
        relu=False,
    ):
        return bias.new_empty((n_img, bias.shape[0], ho, wo))


_EXT = Extension(
    "srigl_conv_direct", SOURCES, "srigl_conv", setup=_setup, label="the direct conv kernel"
)


def plane_stride(hq: int, wq: int) -> int:
    """Floats from one plane of ``conv_planes``' buffer to the next: Hq * Wq rounded up to whole
    64-byte lines, an odd number of them. Each plane then starts a cache line, and the planes
    a tile's taps read spread over every set of the L1 cache: planes an even (or a power-of-
    two) number of lines apart share a few sets and evict each other (Zen 5, one core, 64 x 48
    x 48 planes, 9216 bytes apart: 3.0 vector FMAs per ns, against 3.6-3.9 for 47- or 56-wide
    planes)."""
    lines = -(-hq * wq // 16)
    return (lines + 1 - lines % 2) * 16


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
    stride_of_planes: int | None = None,
) -> torch.Tensor:
    """int32 [n, k]: each tap's offset into one image's planes (see conv_direct.cpp).

    Args:
        indices: int [n, k], group-local fan-in indices c * kh * kw + dy * kw + dx;
        active: int64 [n] output channels; plane_hw: (Hq, Wq) of the planes;
        stride_of_planes: floats from one plane to the next (default Hq * Wq).
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
    between = hq * wq if stride_of_planes is None else stride_of_planes
    off = plane * between + ((dy * dh) // sh) * wq + (dx * dw) // sw
    if off.numel() and int(off.max()) >= 2**31:
        raise ValueError(f"conv planes too large for int32 offsets ({int(off.max())})")
    return off.to(torch.int32).contiguous()


@register_conv("fused")
class FusedConv2d(CondensedConv2d):
    """Direct C++ kernel on CPU (float32); unfold + the Triton condensed kernel on CUDA."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)
    fuses_epilogue: ClassVar[bool] = True

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        ok, why = super().available(device)
        if not ok:
            return ok, why
        if torch.device(device).type == "cuda":
            from backends.fused_triton import triton_available

            return triton_available(device)
        return _EXT.available()

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        ok, why = super().supports(device, dtype)
        if ok and torch.device(device).type == "cpu" and dtype != torch.float32:
            return False, f"the direct C++ conv kernel computes float32 only, not {dtype}"
        return ok, why

    def _after_load(self) -> None:
        super()._after_load()
        self._plans: OrderedDict[tuple[torch.Size, int], tuple[tuple, int]] = OrderedDict()
        self._dense: torch.Tensor | None = None
        self._linear: Any = None
        inner = None
        if self.device.type == "cuda":
            from backends.conv import UnfoldTritonConv2d

            inner = UnfoldTritonConv2d.from_state_dict(self.state_dict(), self.layer_name)
        object.__setattr__(self, "_inner", inner)  # derived, not a submodule (no state)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        for key in ("_inner", "_plans", "_dense", "_linear"):
            state.pop(key, None)
        return state

    def _subsampled(self) -> bool:
        """A strided 1x1 conv without padding reads every s-th pixel only: it runs as a
        stride-1 conv over ``x[:, :, ::sh, ::sw]`` (one small copy instead of s*s phases)."""
        return self.kernel_size == (1, 1) and self.padding == (0, 0) and self.stride != (1, 1)

    def _pointwise(self) -> bool:
        """A 1x1 convolution without groups or padding: a linear layer over the pixels (of
        every s-th pixel when strided: :meth:`_subsampled`)."""
        return self.kernel_size == (1, 1) and self.padding == (0, 0) and self.groups == 1

    def _linear_offered(self) -> bool:
        if not (self._pointwise() and linear_candidate()):
            return False
        from backends.fused import FusedLinear

        return FusedLinear.available("cpu")[0]

    def _linear_layer(self) -> Any:
        """The fused linear layer with this conv's kept weights [out, in] (built on first use,
        not part of the state)."""
        if self._linear is None:
            from backends import create

            weight = self._kept_dense()
            mask = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
            mask[self.active[:, None], self.indices.long()] = True
            linear = create("fused", weight, mask, self.bias, layer_name=self.layer_name)
            # derived, not a submodule: it must not enter the state dict once it has run
            object.__setattr__(self, "_linear", linear)
        return self._linear

    def _run_linear(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """A 1x1 conv as the fused linear on transposed activations: x [N, in, H, W] -> [N, out,
        H, W] (x already subsampled where strided), then the epilogue (``+ residual``, ReLU as
        ``epilogue_relu`` says): in the linear's kernel at batch 1 where it takes the residual
        (``hot_path.kernel_residual``), else in place after."""
        lin = self._linear_layer()
        n, c, h, w = x.shape
        if n == 1:
            xt = x.reshape(c, h * w).contiguous()
            if residual is not None and not kernel_residual(residual, (1, self.out_features, h, w)):
                y = lin.forward_transposed(xt).view(1, self.out_features, h, w)
                return self._epilogue_in_place(y, residual)
            res = None if residual is None else residual.view(self.out_features, h * w)
            y = lin.forward_transposed(xt, res, self.epilogue_relu)
            return y.view(1, self.out_features, h, w)
        xt = x.permute(1, 0, 2, 3).reshape(c, n * h * w).contiguous()
        y = lin.forward_transposed(xt).view(self.out_features, n, h, w)
        y = y.permute(1, 0, 2, 3).contiguous()
        return self._epilogue_in_place(y, residual)

    def _plane_geometry(self, height: int, width: int) -> tuple[bool, int, int]:
        """(in place, Hq, Wq): whether x is read in place, and the planes' size."""
        (sh, sw), (ph, pw) = self.stride, self.padding
        if (sh, sw) == (1, 1) and (ph, pw) == (0, 0):
            return True, height, width
        if self._subsampled():
            return True, -(-height // sh), -(-width // sw)
        return False, -(-(height + 2 * ph) // sh), -(-(width + 2 * pw) // sw)

    def _tune_key(self, height: int, width: int, batch: int, residual: bool = False) -> str:
        # an epilogue changes what is timed; a layer without one keeps its old key
        epilogue = (
            f":ep{int(self.epilogue_relu)}{int(residual)}"
            if (self.epilogue_relu or residual)
            else ""
        )
        return (
            f"{self.in_channels}x{self.out_features}:k{list(self.kernel_size)}:s{list(self.stride)}"
            f":p{list(self.padding)}:d{list(self.dilation)}:g{self.groups}:n{self.n_active}"
            f":k{self.k}:all{int(self._all_active)}:{height}x{width}:b{bucket_of(batch)}"
            f":dense{int(dense_fallback())}:lin{int(self._linear_offered())}{epilogue}"
        )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``F.conv2d(x, weight * mask, bias, ...)``: x [N, in, H, W] -> [N, out, Ho, Wo], then
        the epilogue (``+ residual``, ReLU if ``epilogue_relu``: see ``ConvBackend``).

        A call with an input shape seen before (checked then) skips straight to the kernel
        with the plan made for that shape: the per-call Python work stays small.
        """
        if isinstance(x, torch.Tensor) and x.dtype == torch.float32 and x.is_cpu:
            if grad_needed(x, self.values):  # the C++ kernel has no backward
                return super().forward(x, residual)
            key = (x.shape, torch.get_num_threads())
            plan = self._plans.get(key)
            if plan is not None and (residual is None or isinstance(residual, torch.Tensor)):
                self._plans.move_to_end(key)
                return self._execute(x, plan[0], plan[1], residual)
        return super().forward(x, residual)

    def _conv_epilogue(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        if x.is_cuda or grad_needed(x, self.values):
            return self.apply_epilogue(self._conv(x), residual)
        return self._conv(x, residual)

    def _differentiable_conv(self, x: torch.Tensor) -> torch.Tensor:
        """``F.conv2d`` on the masked weight rebuilt from the values (not cached), so the
        gradient reaches x and the values: the direct kernel has no backward."""
        weight = self._kept_dense().reshape(self.out_features, -1, *self.kernel_size)
        return F.conv2d(x, weight, self.bias, **self.conv_args())

    def _kept_dense(self) -> torch.Tensor:
        """The masked weight [out, in/groups * kh * kw] rebuilt from the values, zero where
        nothing is kept (``index_put``: differentiable with respect to the values)."""
        dense = self.values.new_zeros(self.out_features, self.in_features)
        return dense.index_put((self.active[:, None], self.indices.long()), self.values)

    def _conv(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """The conv of x [N, in, H, W] (N > 0) on CPU through the tuned plan for its shape
        (made here on a plan miss), with the epilogue where a residual is given or
        ``epilogue_relu`` is set (the caller applies it on CUDA and where a gradient is
        needed)."""
        if x.is_cuda:
            return self._inner(x)
        if grad_needed(x, self.values):
            return self._differentiable_conv(x)
        if self.dtype != torch.float32:
            raise BadInputError(
                f"layer {self.layer_name!r}: the direct C++ conv kernel computes float32 only, "
                f"this layer holds {self.dtype}"
            )
        ops = conv_ops()
        n, _, h, w = x.shape
        geometry = self._geometry(h, w)
        threads = torch.get_num_threads()
        isa = int(ops.conv_isa())
        extra = (DENSE_VARIANT,) if dense_fallback() else ()
        set_modes = [ops.conv_pool_set_mode]
        if self._linear_offered():
            extra += (LINEAR_VARIANT,)
            from backends.kernels import ops as linear_ops

            set_modes.append(linear_ops.load().pool_set_mode)
        # every candidate's parallel jobs timed on the OpenMP team (backends.kernels.parallel_mode)
        with on_team(*set_modes):
            variant = best_variant(
                self._tune_key(h, w, n, residual is not None),
                isa,
                int(ops.conv_nvariants(isa)),
                lambda code: self._execute(x, geometry, code, residual),
                threads,
                extra=extra,
            )
        self._plans[(x.shape, threads)] = (geometry, variant)
        while len(self._plans) > MAX_PLANS:
            self._plans.popitem(last=False)
        if all(v != DENSE_VARIANT for _, v in self._plans.values()):
            self._dense = None  # only kept where the tuner chose it
        if all(v != LINEAR_VARIANT for _, v in self._plans.values()):
            self._linear = None
        return self._execute(x, geometry, variant, residual)

    def _geometry(self, height: int, width: int) -> tuple:
        """(Ho, Wo, in place, Hq, Wq, tap offsets, floats per image, floats per plane) for an
        H x W input: that of a plan for another batch of this size where there is one (it does
        not depend on the batch), else computed."""
        for (shape, _), (geometry, _) in self._plans.items():
            if shape[2:] == (height, width):
                return geometry
        ho, wo = self.output_size(height, width)
        in_place, hq, wq = self._plane_geometry(height, width)
        between = hq * wq if in_place else plane_stride(hq, wq)
        offs = tap_offsets(
            self.indices,
            self.active,
            self.out_features,
            self.groups,
            self.in_channels // self.groups,
            self.kernel_size,
            (1, 1) if self._subsampled() else self.stride,
            self.dilation,
            (hq, wq),
            between,
        )
        per_image = (
            self.in_channels * between * (1 if in_place else self.stride[0] * self.stride[1])
        )
        return ho, wo, in_place, hq, wq, offs, per_image, between

    def _execute(
        self,
        x: torch.Tensor,
        geometry: tuple,
        variant: int,
        residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run ``variant`` on x [N, in, H, W] with the geometry made for its shape, then the
        epilogue (``+ residual``, ReLU if ``epilogue_relu``): the direct kernel applies it as
        it writes each tile where the residual is a contiguous float32 tensor of the output's
        shape; otherwise it is applied in place on the new output (or out of place where the
        residual broadcasts the output or needs a gradient)."""
        if variant == DENSE_VARIANT:
            out = F.conv2d(
                x,
                self._dense_weight(),
                self.bias,
                self.stride,
                self.padding,
                self.dilation,
                self.groups,
            )
            return self._epilogue_in_place(out, residual)
        if self._subsampled():
            x = x[:, :, :: self.stride[0], :: self.stride[1]]
        if variant == LINEAR_VARIANT:
            return self._run_linear(x, residual)
        ho, wo, in_place, hq, wq, offs, per_image, between = geometry
        ops = _EXT.ops
        n = x.shape[0]
        out_shape = (n, self.out_features, ho, wo)
        in_kernel = residual is None or kernel_residual(residual, out_shape)  # else after it
        x = x.detach().contiguous()
        if not in_place:
            (sh, sw), (ph, pw) = self.stride, self.padding
            x = ops.conv_planes(x, sh, sw, ph, pw, hq, wq, between)
        out = ops.conv_direct(
            x,
            n,
            per_image,
            offs,
            self.values,
            self.active,
            self.bias,
            self._all_active,
            ho,
            wo,
            wq,
            not in_place,
            variant,
            residual if in_kernel else None,
            self.epilogue_relu and in_kernel,
        )
        return out if in_kernel else self.apply_epilogue(out, residual)

    def _epilogue_in_place(self, out: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """The epilogue on a new output ``out`` (no gradient needed): in place where the
        residual has the output's shape and dtype, else :meth:`apply_epilogue`."""
        if residual is not None:
            if residual.shape != out.shape or residual.dtype != out.dtype or residual.requires_grad:
                return self.apply_epilogue(out, residual)
            out.add_(residual)
        return out.relu_() if self.epilogue_relu else out

    def _dense_weight(self) -> torch.Tensor:
        """The masked dense weight [out, in/groups, kh, kw], rebuilt from the condensed form
        on first use (the dense fallback of layers dense enough for oneDNN to win)."""
        if self._dense is None:
            self._dense = self._kept_dense().reshape(self.out_features, -1, *self.kernel_size)
        return self._dense

    def chosen_variants(self) -> dict[tuple[int, int, int, int], str]:
        """{(H, W, batch bucket, threads): variant that runs} (``dense`` = the fallback,
        ``linear`` = the fused linear over the pixels), for the plans this layer holds."""
        return {
            (shape[2], shape[3], bucket_of(shape[0]), threads): (
                "dense" if v == DENSE_VARIANT else "linear" if v == LINEAR_VARIANT else str(v)
            )
            for (shape, threads), (_, v) in self._plans.items()
        }
