"""The interface every GEMM backend implements.

A backend is an ``nn.Module`` built from a masked dense Linear layer ``(weight, mask, bias)``
whose forward computes ``F.linear(x, weight * mask, bias)`` for ``x`` of shape ``[..., in]``.
Each backend class declares the devices and dtypes it supports; :meth:`Backend.available`
says whether it can run here and, if not, why.

Saving and loading: a backend keeps everything it needs in buffers (``state_buffers``) plus
``in_features``/``out_features`` in the module's extra state, so ``state_dict()`` holds the
whole layer. ``load_state_dict`` resizes the buffers to the incoming shapes (a condensed layer's
shapes depend on its mask), and :meth:`Backend.from_state_dict` rebuilds a module from a state
dict alone, without the dense weight or the mask.
"""

from __future__ import annotations

import math
import os
from typing import IO, Any, ClassVar

import torch
from torch import nn

from backends.state_checks import LayerStateError, validate_layer_state


class BackendUnavailableError(RuntimeError):
    """Raised when a backend is created where it cannot run; the message says why."""


class BadInputError(ValueError, TypeError):
    """An input tensor has the wrong shape, dtype or device; the message says expected vs got.

    It is both a ``ValueError`` and a ``TypeError`` so callers may catch either.
    """


class Backend(nn.Module):
    """Base class of the GEMM backends.

    Subclasses set ``devices`` (e.g. ``("cpu", "cuda")``), ``dtypes`` and ``state_buffers`` (the
    names of the persistent buffers that define the layer), implement :meth:`_build` (the
    checked layer -> those buffers) and ``forward(x)``, and may override :meth:`_checked_mask`
    (a layer kind's own checks and options, e.g. a convolution's geometry), :meth:`available`
    to check optional libraries (numba, Triton, CUDA) and :meth:`_after_load` to derive
    non-persistent data.
    """

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    state_buffers: ClassVar[tuple[str, ...]] = ()
    #: the persistent buffer that holds the layer's floating weights (its dtype and device are
    #: the layer's): ``weight`` for the dense forms, ``values`` for the condensed ones
    weights_buffer: ClassVar[str] = "weight"
    #: a dense baseline (the bench times speed-ups against the fastest of these: best_dense)
    dense_baseline: ClassVar[bool] = False

    in_features: int
    out_features: int
    layer_name: str | None

    # ------------------------------------------------------------------ capabilities
    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """Whether this backend runs on ``device`` here: ``(True, "")`` or ``(False, reason)``."""
        dev = torch.device(device).type
        if dev not in cls.devices:
            return False, f"{cls.__name__} supports devices {cls.devices}, not {dev!r}"
        if dev == "cuda" and not torch.cuda.is_available():
            return False, "CUDA is not available on this machine"
        return True, ""

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        """Whether this backend runs ``dtype`` on ``device``: ``(True, "")`` or ``(False, why)``."""
        ok, why = cls.available(device)
        if not ok:
            return ok, why
        if dtype not in cls.dtypes:
            return False, f"{cls.__name__} supports dtypes {cls.dtypes}, not {dtype}"
        return True, ""

    # ------------------------------------------------------------------ construction
    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None = None,
        layer_name: str | None = None,
        **options: Any,
    ) -> None:
        """Build the layer from a masked dense one: ``weight`` [out, *fan_in dims], ``mask`` of
        its shape, ``bias`` [out] or None; ``layer_name`` is named in error messages and
        ``options`` go to :meth:`_checked_mask` (none for a Linear layer).

        Raises:
            BadInputError: a shape, dtype or device does not match, or this backend does not
                run ``weight``'s dtype on its device.
        """
        super().__init__()
        self.layer_name = layer_name
        mask = self._checked_mask(weight, mask, bias, **options)
        buffers = self._build(weight.detach(), mask, None if bias is None else bias.detach())
        self._set_state(math.prod(weight.shape[1:]), weight.shape[0], layer_name, **buffers)

    def _checked_mask(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        bias: torch.Tensor | None,
        **options: Any,
    ) -> torch.Tensor:
        """Check the layer's shapes (a Linear layer: weight [out, in], no options) and that this
        backend runs ``weight``'s dtype on its device; returns the mask as bool."""
        if options:
            raise BadInputError(
                f"layer {self.layer_name!r}: a Linear layer (2-D weight) takes no options, got "
                f"{sorted(options)} (stride, padding, dilation, groups go with a 4-D Conv2d weight)"
            )
        mask = check_layer(weight, mask, bias, self.layer_name)
        self._check_dtype(weight.dtype, weight.device)
        return mask

    def _build(
        self, weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        """The persistent buffers (``state_buffers``) of the checked, detached layer."""
        raise NotImplementedError

    def _check_dtype(self, dtype: torch.dtype, device: torch.device) -> None:
        ok, why = type(self).supports(device, dtype)
        if not ok:
            raise BadInputError(f"layer {self.layer_name!r}: {why}")

    def _set_state(
        self, in_features: int, out_features: int, layer_name: str | None, **buffers: torch.Tensor
    ) -> None:
        """Register the persistent buffers ``state_buffers`` and derive the rest."""
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.layer_name = layer_name
        missing = set(self.state_buffers) ^ set(buffers)
        if missing:
            raise ValueError(f"{type(self).__name__}: buffers {sorted(missing)} mismatch")
        for name in self.state_buffers:
            self.register_buffer(name, buffers[name])
        self._after_load()

    def _after_load(self) -> None:
        """Derive non-persistent data (kernel index copies, sparse tensors) from the buffers."""

    @classmethod
    def from_state_dict(cls, state_dict: dict[str, Any], layer_name: str | None = None) -> Backend:
        """Rebuild a layer of this backend from ``module.state_dict()`` of one (any shapes).

        Condensed backends (``naive``, ``csr``, ``coo``, ``compiled``, ``fused``, ...) share one
        state-dict layout, so a state dict saved from one can be loaded into another.
        """
        obj = cls.__new__(cls)
        nn.Module.__init__(obj)
        extra = state_dict.get("_extra_state", {})
        if not isinstance(extra, dict):
            extra = {}
        try:
            bufs = {name: state_dict[name] for name in cls.state_buffers}
            in_f, out_f = extra["in_features"], extra["out_features"]
        except KeyError as err:
            raise ValueError(
                f"{cls.__name__}.from_state_dict: missing key {err}; expected "
                f"{list(cls.state_buffers) + ['_extra_state']}, got {sorted(state_dict)}"
            ) from None
        cls.validate_state(bufs, extra, layer_name)
        bufs = {k: v.clone(memory_format=torch.contiguous_format) for k, v in bufs.items()}
        obj.set_extra_state(extra)  # validated above (a conv's geometry too)
        obj._set_state(in_f, out_f, layer_name, **bufs)
        return obj

    @classmethod
    def load(
        cls,
        file: str | os.PathLike | IO[bytes],
        layer_name: str | None = None,
        map_location: str | torch.device | None = None,
    ) -> Backend:
        """Rebuild a layer saved with ``torch.save(layer.state_dict(), file)``.

        Reads with ``torch.load(weights_only=True)`` (no code runs) and validates every buffer
        (:meth:`validate_state`) before any kernel sees it.

        Raises:
            LayerStateError: (a ValueError) an unreadable, truncated or foreign file, or a
                state that does not describe a valid layer; the message names the file.
        """
        where = os.fspath(file) if isinstance(file, (str, os.PathLike)) else "<file object>"
        try:
            state = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types (EOFError, RuntimeError, ...)
            raise LayerStateError(
                f"{where}: not a readable layer state dict ({type(exc).__name__}: {exc})"
            ) from exc
        if not isinstance(state, dict):
            raise LayerStateError(f"{where}: holds a {type(state).__name__}, not a state dict")
        try:
            return cls.from_state_dict(state, layer_name=layer_name)
        except ValueError as exc:
            raise LayerStateError(f"{where}: {exc}") from exc

    @classmethod
    def validate_state(
        cls,
        buffers: dict[str, Any],
        extra: Any,
        layer_name: str | None = None,
    ) -> None:
        """Check a loaded state (untrusted: from a file) before any kernel sees it.

        Called by every load path (:meth:`from_state_dict`, ``load_state_dict``) with the
        buffers and the extra state (``in_features``, ``out_features`` and whatever else a
        backend keeps there, e.g. a convolution's geometry). The default runs
        :func:`backends.state_checks.validate_layer_state` over the buffers it knows by name
        (``active``, ``values``, ``indices``, ``bias``, ``weight``), after
        :meth:`_check_extra_state` (a convolution's geometry) and as :meth:`_linear_view` shows
        them; a backend with other buffers (packed kernels) overrides this, checks its own parts
        and calls it through ``super()``.

        Raises:
            LayerStateError: (a ValueError) naming the layer, the buffer and what is allowed.
        """
        extra = extra if isinstance(extra, dict) else {}
        cls._check_extra_state(extra, layer_name)
        validate_layer_state(
            cls._linear_view(buffers),
            extra.get("in_features"),
            extra.get("out_features"),
            layer_name=layer_name,
            owner=cls.__name__,
        )

    @classmethod
    def _check_extra_state(cls, extra: dict[str, Any], layer_name: str | None) -> None:
        """Check what a layer kind keeps in the extra state beside in/out_features (a Linear
        layer: nothing); raises LayerStateError."""

    @staticmethod
    def _linear_view(buffers: dict[str, Any]) -> dict[str, Any]:
        """The buffers as the Linear layer checks see them (a Linear layer's: as they are)."""
        return buffers

    def get_extra_state(self) -> dict[str, int]:
        return {"in_features": self.in_features, "out_features": self.out_features}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.in_features = int(state["in_features"])
        self.out_features = int(state["out_features"])

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
    ):
        # Untrusted input: check the state as it will be (incoming over current) first.
        extra = state_dict.get(prefix + "_extra_state", self.get_extra_state())
        if not isinstance(extra, dict):
            extra = {}
        merged = {n: state_dict.get(prefix + n, self._buffers.get(n)) for n in self.state_buffers}
        self.validate_state(merged, extra, self.layer_name)
        # Shapes of a condensed layer depend on its mask: adopt the incoming shapes and dtypes.
        for name in self.state_buffers:
            incoming = state_dict.get(prefix + name)
            mine = self._buffers.get(name)
            if isinstance(incoming, torch.Tensor) and mine is not None:
                if incoming.shape != mine.shape or incoming.dtype != mine.dtype:
                    self._buffers[name] = torch.empty(
                        incoming.shape, dtype=incoming.dtype, device=mine.device
                    )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, errors
        )
        self._after_load()

    def __getstate__(self) -> dict[str, Any]:
        # Derived data (non-persistent buffers such as sparse tensors, numpy views, compiled
        # functions) is rebuilt from the persistent buffers, never copied.
        state = self.__dict__.copy()
        for name in ("_numba", "_fn"):
            state.pop(name, None)
        derived = self._non_persistent_buffers_set
        state["_buffers"] = {k: v for k, v in self._buffers.items() if k not in derived}
        state["_non_persistent_buffers_set"] = set()
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._after_load()

    def _apply(self, fn, *args, **kwargs):
        # .to(), .cuda(), .half(), ... replace the buffers: derive the rest again.
        out = super()._apply(fn, *args, **kwargs)
        self._after_load()
        return out

    # ------------------------------------------------------------------ forward helpers
    @property
    def dtype(self) -> torch.dtype:
        """The floating dtype of the layer's parameters (inputs must match it): that of the
        buffer named by ``weights_buffer``."""
        return self._buffers[self.weights_buffer].dtype

    @property
    def device(self) -> torch.device:
        """The device the layer's buffers live on (inputs must match it)."""
        return self._buffers[self.weights_buffer].device

    def check_input(self, x: torch.Tensor) -> None:
        """Raise :class:`BadInputError` unless ``x`` is a tensor [..., in] of the layer's dtype
        and device."""
        if not isinstance(x, torch.Tensor):
            raise BadInputError(f"layer {self.layer_name!r}: expected a tensor, got {type(x)}")
        if x.dim() < 1 or x.shape[-1] != self.in_features:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected input [..., {self.in_features}], "
                f"got shape {list(x.shape)}"
            )
        self.check_dtype_device(x)

    def check_dtype_device(self, x: torch.Tensor) -> None:
        """Raise :class:`BadInputError` unless tensor ``x`` has the layer's dtype and device."""
        if x.dtype != self.dtype:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected input dtype {self.dtype}, got {x.dtype}"
            )
        if x.device != self.device:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected input on {self.device}, got {x.device}"
            )

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


def check_layer(
    weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None, layer_name: str | None
) -> torch.Tensor:
    """Validate a masked Linear layer and return its mask as a bool tensor [out, in].

    Args:
        weight: float tensor [out, in].
        mask: bool tensor [out, in] (or one of any dtype holding only 0 and 1), same device as
            ``weight``.
        bias: float tensor [out] (same dtype as ``weight``) or None.

    Raises:
        BadInputError: a shape, dtype or device does not match, or a non-bool mask holds a
            value other than 0 and 1 (a float mask of 0.5 is refused, not read as True).
    """
    where = f"layer {layer_name!r}"
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        shape = list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight)
        raise BadInputError(f"{where}: weight must be a 2-d tensor [out, in], got {shape}")
    if not weight.is_floating_point():
        raise BadInputError(f"{where}: weight must be floating point, got {weight.dtype}")
    return check_mask_and_bias(weight, mask, bias, where)


def check_mask_and_bias(
    weight: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor | None, where: str
) -> torch.Tensor:
    """The checks every layer kind shares (Linear and Conv2d): ``mask`` has the weight's shape
    and device, ``bias`` is [out] of the weight's dtype and device; returns the mask as bool.

    A 0/1 mask of another dtype is accepted; any other value (0.5, -1, NaN) is refused rather
    than read as True.

    Raises:
        BadInputError: naming ``where`` (the layer), what was expected and what was given.
    """
    if not isinstance(mask, torch.Tensor) or mask.shape != weight.shape:
        shape = list(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)
        raise BadInputError(
            f"{where}: mask must have the weight's shape {list(weight.shape)}, got {shape}"
        )
    if mask.device != weight.device:
        raise BadInputError(f"{where}: mask on {mask.device}, weight on {weight.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or bias.shape != (weight.shape[0],):
            shape = list(bias.shape) if isinstance(bias, torch.Tensor) else type(bias)
            raise BadInputError(f"{where}: bias must be [out]=[{weight.shape[0]}], got {shape}")
        if bias.dtype != weight.dtype or bias.device != weight.device:
            raise BadInputError(
                f"{where}: bias is {bias.dtype} on {bias.device}, expected the weight's "
                f"{weight.dtype} on {weight.device}"
            )
    if mask.dtype == torch.bool:
        return mask
    # a 0/1 mask of another dtype is accepted as is; any other value (0.5, -1, NaN) is refused
    # rather than read as True
    odd = (mask != 0) & (mask != 1)
    if bool(odd.any()):
        raise BadInputError(
            f"{where}: mask must be bool (or hold only 0 and 1), got {mask.dtype} with "
            f"{int(odd.sum())} other values (e.g. {mask[odd][0].item()!r})"
        )
    return mask != 0
