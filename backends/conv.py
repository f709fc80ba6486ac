"""Condensed Conv2d: the convolution counterpart of every GEMM backend.

``backends.create(name, weight, mask, bias, stride=..., padding=..., dilation=..., groups=...)``
with a 4-D ``weight`` [out, in/groups, kh, kw] builds the conv module registered here for backend
``name``; it computes ``F.conv2d(x, weight * mask, bias, stride, padding, dilation, groups)`` for
x [N, in, H, W] (zero padding). Which backends have one: :func:`conv_class` (``None`` with the
reason from :func:`conv_supports` where there is none).

Condensed form (backends other than ``dense`` / ``structured``): each output channel's fan-in is
its flattened ``(c, dy, dx)`` row of ``in/groups * kh * kw`` inputs (the weight reshaped to
[out, fan_in]); with constant fan-in it condenses exactly like a Linear layer
(:func:`backends.condensed.condense_layer`): ``active`` int64 [n_active], ``values`` [n_active, k],
``indices`` int32 [n_active, k] (into the channel's group-local fan-in, ascending), ``bias`` [out].
The conv geometry is kept in the extra state, so a state dict rebuilds the layer alone.

The plain-torch backends (``naive``, ``csr``, ``coo``, ``compiled``) and ``fused_triton`` go
through an unfold: ``F.unfold(x)`` [N, in*kh*kw, L] transposed to [N*L, in*kh*kw] rows is the input
of the backend's own condensed Linear layer, whose indices are offset by each channel's group.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from backends.base import Backend, BadInputError, check_mask_and_bias
from backends.condensed import CondensedForm
from backends.dense import MaskedDenseForm, StructuredForm
from backends.state_checks import LayerStateError

__all__ = [
    "CondensedConv2d",
    "ConvBackend",
    "conv_class",
    "conv_output_size",
    "conv_supports",
    "declare_no_conv",
    "register_conv",
]

# backend name -> its conv module class. One entry per backend of ``backends.names()``.
_CONV: dict[str, type[ConvBackend]] = {}
# backend name -> why it has no conv module (for backends that declare they have none).
_NO_CONV: dict[str, str] = {}


def register_conv(name: str) -> Callable[[type[ConvBackend]], type[ConvBackend]]:
    """Decorator: the class is backend ``name``'s Conv2d module."""

    def decorator(cls: type[ConvBackend]) -> type[ConvBackend]:
        existing = _CONV.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"backend {name!r} already has a conv module {existing!r}")
        _CONV[name] = cls
        cls.backend_name = name
        return cls

    return decorator


def declare_no_conv(name: str, reason: str) -> None:
    """Declare that backend ``name`` has no Conv2d module, and why (shown by ``supports``)."""
    _NO_CONV[name] = reason


def conv_class(name: str) -> type[ConvBackend] | None:
    """Backend ``name``'s Conv2d module class, or None where it has none (see conv_supports)."""
    import backends

    backends.get(name)  # UnknownNameError for an unknown backend
    return _CONV.get(name)


def conv_supports(name: str, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
    """Whether backend ``name`` runs a Conv2d of ``dtype`` on ``device``: ``(ok, why)``."""
    cls = conv_class(name)
    if cls is None:
        why = _NO_CONV.get(name, "no Conv2d module is registered for this backend")
        return False, f"backend {name!r} has no Conv2d implementation: {why}"
    return cls.supports(device, dtype)


#: the extra-state keys of a convolution's geometry (beside in_features/out_features)
_GEOMETRY = ("in_channels", "kernel_size", "stride", "padding", "dilation", "groups")


def _pair(value: Any, what: str, layer_name: str | None, minimum: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    ):
        raise BadInputError(
            f"layer {layer_name!r}: {what} must be an int or a pair of ints >= {minimum}, "
            f"got {value!r}"
        )
    return int(value[0]), int(value[1])


def conv_output_size(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """(Ho, Wo) of a convolution over an input of spatial ``size`` (H, W); may be <= 0."""
    return tuple(  # type: ignore[return-value]
        (size[i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
        for i in range(2)
    )


def check_conv_layer(
    weight: torch.Tensor,
    mask: torch.Tensor,
    bias: torch.Tensor | None,
    layer_name: str | None,
    groups: int,
) -> torch.Tensor:
    """Validate a masked Conv2d (weight [out, in/groups, kh, kw]); returns the mask as bool."""
    where = f"layer {layer_name!r}"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
        raise BadInputError(
            f"{where}: conv weight must be a 4-d tensor [out, in/groups, kh, kw], got {shape}"
        )
    if not weight.is_floating_point():
        raise BadInputError(f"{where}: weight must be floating point, got {weight.dtype}")
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise BadInputError(f"{where}: groups must be an int >= 1, got {groups!r}")
    if weight.shape[0] % groups:
        raise BadInputError(
            f"{where}: out_channels={weight.shape[0]} is not divisible by groups={groups}"
        )
    return check_mask_and_bias(weight, mask, bias, where)


class ConvBackend(Backend):
    """Base of the Conv2d modules: geometry, input checks, empty inputs, save/load.

    ``in_features`` is the fan-in ``in/groups * kh * kw`` and ``out_features`` the output
    channels (what the condensed form is over); ``in_channels``, ``kernel_size``, ``stride``,
    ``padding``, ``dilation``, ``groups`` are the convolution's. The constructor takes
    ``(weight, mask, bias=None, layer_name=None, stride=1, padding=0, dilation=1, groups=1,
    padding_mode="zeros")`` (see :meth:`_checked_mask`). Subclasses implement :meth:`_build`
    (weight, bool mask, bias -> buffers) and :meth:`_conv` (x [N, in, H, W] with N > 0 ->
    [N, out, Ho, Wo]).

    Epilogue: :func:`srigl.epilogues.fuse_epilogues` may hand a layer the ReLU and the residual
    add that follow it in the model (``epilogue_relu``, the ``residual`` argument of
    :meth:`forward`). Here they are applied after :meth:`_conv`; a backend whose kernel applies
    them as it writes the output (``fuses_epilogue``) overrides :meth:`_conv_epilogue`.
    """

    backend_name: ClassVar[str] = ""
    #: whether the kernel applies the epilogue itself (what fuse_epilogues looks for)
    fuses_epilogue: ClassVar[bool] = False
    #: ReLU after the (residual-added) output; set by srigl.epilogues.fuse_epilogues
    epilogue_relu: bool = False

    in_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int

    def _checked_mask(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        **unknown: Any,
    ) -> torch.Tensor:
        """The Conv2d checks (weight [out, in/groups, kh, kw]; the constructor's options are
        ``nn.Conv2d``'s, with ``padding_mode="zeros"`` and int padding only), then the geometry
        is set; returns the mask as bool."""
        layer_name = self.layer_name
        if unknown:
            raise BadInputError(
                f"layer {layer_name!r}: unknown Conv2d option(s) {sorted(unknown)}; allowed: "
                "stride, padding, dilation, groups, padding_mode"
            )
        if padding_mode != "zeros":
            raise BadInputError(
                f"layer {layer_name!r}: condensed convolutions support padding_mode='zeros' "
                f"only, got {padding_mode!r}"
            )
        if isinstance(padding, str):
            raise BadInputError(
                f"layer {layer_name!r}: padding must be ints (resolve 'same'/'valid' first), "
                f"got {padding!r}"
            )
        mask = check_conv_layer(weight, mask, bias, layer_name, groups)
        self._check_dtype(weight.dtype, weight.device)
        self._set_geometry(
            in_channels=weight.shape[1] * groups,
            kernel_size=tuple(weight.shape[2:]),
            stride=_pair(stride, "stride", layer_name, 1),
            padding=_pair(padding, "padding", layer_name, 0),
            dilation=_pair(dilation, "dilation", layer_name, 1),
            groups=groups,
        )
        return mask

    def _set_geometry(self, **geometry: Any) -> None:
        self.in_channels = int(geometry["in_channels"])
        self.kernel_size = tuple(geometry["kernel_size"])  # type: ignore[assignment]
        self.stride = tuple(geometry["stride"])  # type: ignore[assignment]
        self.padding = tuple(geometry["padding"])  # type: ignore[assignment]
        self.dilation = tuple(geometry["dilation"])  # type: ignore[assignment]
        self.groups = int(geometry["groups"])

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # ------------------------------------------------------------------ save / load
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "in_channels": self.in_channels,
            "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": list(self.padding),
            "dilation": list(self.dilation),
            "groups": self.groups,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        super().set_extra_state(state)
        self._set_geometry(**state)

    @classmethod
    def _check_extra_state(cls, extra: dict[str, Any], layer_name: str | None) -> None:
        """The geometry in the extra state (consistent with ``in_features``: in_channels /
        groups * kh * kw); the Linear checks then run over the flattened fan-in
        (:meth:`_linear_view`)."""
        where = f"{cls.__name__} layer {layer_name!r}"
        missing = [key for key in _GEOMETRY if key not in extra]
        if missing:
            raise LayerStateError(
                f"{where}: the extra state lacks the conv geometry {missing} (is this a Linear "
                "layer's state dict?)"
            )
        try:
            for key, minimum in (("kernel_size", 1), ("stride", 1), ("padding", 0)):
                _pair(extra[key], key, layer_name, minimum)
            _pair(extra["dilation"], "dilation", layer_name, 1)
        except BadInputError as exc:
            raise LayerStateError(f"{where}: {exc}") from None
        cin, groups, in_f, out_f = (
            extra.get(k) for k in ("in_channels", "groups", "in_features", "out_features")
        )
        kh, kw = extra["kernel_size"]
        if (
            not all(
                isinstance(v, int) and not isinstance(v, bool) for v in (cin, groups, in_f, out_f)
            )
            or groups < 1
            or cin % groups
            or out_f % groups
            or in_f != cin // groups * kh * kw
        ):
            raise LayerStateError(
                f"{where}: inconsistent conv geometry: in_features={in_f!r}, out_features="
                f"{out_f!r}, in_channels={cin!r}, groups={groups!r}, kernel_size={[kh, kw]}; "
                "allowed: ints with in_features = in_channels / groups * kh * kw and both "
                "channel counts divisible by groups"
            )

    @staticmethod
    def _linear_view(buffers: dict[str, Any]) -> dict[str, Any]:
        """The buffers with a 4-D ``weight`` viewed as [rows, in/groups * kh * kw]."""
        flat = dict(buffers)
        weight = flat.get("weight")
        if isinstance(weight, torch.Tensor) and weight.dim() == 4:
            flat["weight"] = weight.reshape(weight.shape[0], -1)
        return flat

    # ------------------------------------------------------------------ forward
    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(Ho, Wo) for an input of H x W."""
        return conv_output_size(
            (height, width), self.kernel_size, self.stride, self.padding, self.dilation
        )

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`BadInputError` unless x is [N, in_channels, H, W] of the layer's dtype
        and device with a non-empty output."""
        if not isinstance(x, torch.Tensor):
            raise BadInputError(f"layer {self.layer_name!r}: expected a tensor, got {type(x)}")
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected input [N, {self.in_channels}, H, W], "
                f"got shape {list(x.shape)}"
            )
        self.check_dtype_device(x)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        if ho <= 0 or wo <= 0:
            raise BadInputError(
                f"layer {self.layer_name!r}: input {list(x.shape[2:])} is too small for kernel "
                f"{list(self.kernel_size)} with padding {list(self.padding)} and dilation "
                f"{list(self.dilation)}"
            )

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``F.conv2d(x, weight * mask, bias, ...)``: x [N, in, H, W] -> [N, out, Ho, Wo]; then
        ``+ residual`` (any tensor that adds to the output) and ReLU if ``epilogue_relu``."""
        self.check_input(x)
        if residual is not None and not isinstance(residual, torch.Tensor):
            residual = torch.as_tensor(residual, device=x.device)  # a number: a 0-dim tensor
        if x.shape[0] == 0:
            ho, wo = self.output_size(x.shape[2], x.shape[3])
            return self.apply_epilogue(x.new_empty(0, self.out_features, ho, wo), residual)
        if residual is None and not self.epilogue_relu:
            return self._conv(x)
        return self._conv_epilogue(x, residual)

    def _conv_epilogue(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """:meth:`_conv` with the epilogue (overridden where the kernel applies it)."""
        return self.apply_epilogue(self._conv(x), residual)

    def apply_epilogue(self, out: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """``relu(out + residual)`` as the layer's epilogue says (new tensors: autograd-safe)."""
        if residual is not None:
            out = out + residual
        return torch.relu(out) if self.epilogue_relu else out

    def conv_args(self) -> dict[str, Any]:
        """stride, padding, dilation, groups as ``F.conv2d`` takes them."""
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_features}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}" + (", epilogue_relu=True" if self.epilogue_relu else "")
        )


@register_conv("dense")
class DenseConv2d(MaskedDenseForm, ConvBackend):
    """``F.conv2d`` with the masked weight stored dense [out, in/groups, kh, kw]; any mask."""

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, **self.conv_args())


@register_conv("structured")
class StructuredConv2d(StructuredForm, ConvBackend):
    """Dense convolution over the non-ablated output channels only; ablated channels output
    their bias. Any mask. With groups > 1 the kept channels of each group run as one conv."""

    def _after_load(self) -> None:
        super()._after_load()
        # per group with kept channels: (group, first, end) positions into ``active``; active is
        # ascending, so a group's channels are one contiguous run and its weight rows a view
        per_out = self.out_features // self.groups
        counts = torch.bincount(self.active // per_out, minlength=self.groups).tolist()
        ends = [sum(counts[: g + 1]) for g in range(self.groups)]
        self._group_parts = [(g, end - n, end) for g, (n, end) in enumerate(zip(counts, ends)) if n]

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        args = self.conv_args()
        if self._all_active:
            return F.conv2d(x, self.weight, self.bias, **args)
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        # clone, never contiguous(): at batch 1 with a 1 x 1 output that would be the bias itself
        out = self.bias.view(1, -1, 1, 1).expand(x.shape[0], -1, ho, wo).clone()
        if not self.active.numel():
            return out
        if self.groups == 1:
            y = F.conv2d(x, self.weight, self.bias_active, **args)
            return out.index_copy_(1, self.active, y)
        cin_g = self.in_channels // self.groups
        args["groups"] = 1
        for g, first, end in self._group_parts:
            xg = x[:, g * cin_g : (g + 1) * cin_g]
            y = F.conv2d(xg, self.weight[first:end], self.bias_active[first:end], **args)
            out.index_copy_(1, self.active[first:end], y)
        return out


class CondensedConv2d(CondensedForm, ConvBackend):
    """Base of the conv modules computing from the condensed form (see the module docstring)."""

    def _after_load(self) -> None:
        self._all_active = self.active.numel() == self.out_features

    def unfold_indices(self) -> torch.Tensor:
        """int32 [n_active, k]: the indices into the rows of ``F.unfold(x)`` (all channels):
        each channel's group-local index plus its group's offset ``g * fan_in``."""
        per_out = self.out_features // self.groups
        group = (self.active // per_out).to(torch.int64)
        return (self.indices.to(torch.int64) + (group * self.in_features)[:, None]).to(torch.int32)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, n_active={self.n_active}, k={self.k}, dtype={self.dtype}"


class UnfoldConv2d(CondensedConv2d):
    """Unfold, then the backend ``backend_name``'s own condensed Linear layer on the
    [N*L, in*kh*kw] rows, then back to [N, out, Ho, Wo]."""

    @classmethod
    def _linear_class(cls) -> type[Backend]:
        import backends

        return backends.get(cls.backend_name)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        return cls._linear_class().available(device)

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        return cls._linear_class().supports(device, dtype)

    def _after_load(self) -> None:
        super()._after_load()
        state = {
            "active": self.active,
            "values": self.values,
            "indices": self.unfold_indices(),
            "bias": self.bias,
            "_extra_state": {
                "in_features": self.in_channels * self.kernel_size[0] * self.kernel_size[1],
                "out_features": self.out_features,
            },
        }
        inner = self._linear_class().from_state_dict(state, layer_name=self.layer_name)
        object.__setattr__(self, "_inner", inner)  # derived, not a submodule (no state)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_inner", None)
        return state

    def _conv(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        ho, wo = self.output_size(x.shape[2], x.shape[3])
        cols = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        rows = cols.transpose(1, 2).reshape(n * ho * wo, cols.shape[1])
        y = self._inner(rows)  # [N*L, out]
        return y.reshape(n, ho, wo, self.out_features).permute(0, 3, 1, 2).contiguous()


# One real module-level class per backend (not made with type()), so that pickle and torch.save
# of a condensed model find them by name.


@register_conv("naive")
class UnfoldNaiveConv2d(UnfoldConv2d):
    """Unfold + the condensed Linear layer of backend 'naive'."""


@register_conv("csr")
class UnfoldCSRConv2d(UnfoldConv2d):
    """Unfold + the condensed Linear layer of backend 'csr'."""


@register_conv("coo")
class UnfoldCOOConv2d(UnfoldConv2d):
    """Unfold + the condensed Linear layer of backend 'coo'."""


@register_conv("compiled")
class UnfoldCompiledConv2d(UnfoldConv2d):
    """Unfold + the condensed Linear layer of backend 'compiled' (compiled on first call)."""

    slow_to_build = True


@register_conv("fused_triton")
class UnfoldTritonConv2d(UnfoldConv2d):
    """Unfold + the condensed Linear layer of backend 'fused_triton'."""
