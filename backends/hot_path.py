"""What the eager forward of the hand-written kernels shares (``fused``, ``dense_kernel``,
``fused_conv``, ``fused_triton``): the few steps a batch-1 call cannot avoid, and nothing else.

At batch 1 a layer's Python work (input checks, module attribute look-ups, the dispatcher's
autograd formula) costs as much as the kernel, so a baseline whose forward does more Python
than the condensed layer's looks slower than its kernel is. ``fused`` calls its operator through
:func:`call_op` (the raw operator, below the autograd key unless x needs a gradient: its op has
a backward formula for x); ``dense_kernel``, whose op has none, sends an x that needs a gradient
to ``F.linear`` first and calls its raw operator under :data:`BELOW_AUTOGRAD`. "Is a gradient
needed" is :func:`grad_needed`. Below the dispatcher, ``fused`` has a direct entry (its extension
module's ``linear``); :func:`direct_ok` says when calling it is the same as calling the operator.
"""

from __future__ import annotations

from typing import Any

import torch

#: what torch.library's autograd formulas use to call an op without recording a gradient
BELOW_AUTOGRAD = torch._C._AutoDispatchBelowAutograd


def raw_op(overload: Any) -> Any:
    """The C++ callable behind an ``OpOverload`` (``torch.ops.ns.op.default``): calling it skips
    the Python overload object's ``__call__`` (same dispatch, fewer Python frames)."""
    return getattr(overload, "_op", overload)


_C = torch._C
_TENSOR = torch.Tensor


def direct_ok(x: Any) -> bool:
    """True when a call that skips the dispatcher does what the operator would: x is a plain
    CPU-side ``torch.Tensor`` (no subclass: FakeTensor, DTensor, a Parameter), it needs no
    gradient, and nothing above the dispatcher's CPU kernel is watching (no torch function or
    dispatch mode, no functorch transform, no ``torch.jit.trace``, no profiler: the profiler
    records operators, so under it the operator is called and shows up)."""
    return (
        type(x) is _TENSOR
        and not (x.requires_grad and _C.is_grad_enabled())
        and not _C._is_torch_function_mode_enabled()
        and not _C._len_torch_dispatch_stack()
        and not _C._are_functorch_transforms_active()
        and _C._get_tracing_state() is None
        and not _C._autograd._profiler_enabled()
    )


def grad_needed(x: torch.Tensor, values: torch.Tensor) -> bool:
    """A gradient is needed: grad mode is on and x (any shape) or the layer's ``values``
    require grad. The kernels without a backward (numba, Triton, the direct conv) then run the
    differentiable reference form instead."""
    return torch.is_grad_enabled() and (x.requires_grad or values.requires_grad)


def kernel_residual(residual: Any, shape: tuple[int, ...]) -> bool:
    """Whether a C++ kernel can add ``residual`` as it writes an output of ``shape`` (the
    epilogue of ``fused`` convs and 1x1 convs): a contiguous float32 CPU tensor of exactly that
    shape that needs no gradient. Any other residual is added after the kernel, by torch."""
    return (
        isinstance(residual, torch.Tensor)
        and residual.dtype == torch.float32
        and residual.is_cpu
        and tuple(residual.shape) == tuple(shape)
        and residual.is_contiguous()
        and not (residual.requires_grad and torch.is_grad_enabled())
    )


def call_op(op: Any, x: torch.Tensor, *args: Any) -> torch.Tensor:
    """``op(x, *args)`` for an operator whose autograd concerns x only (float32 CPU tensors in,
    one tensor out): below the autograd key (its Python formula is not entered) unless grad
    mode is on and x requires grad."""
    if x.requires_grad and torch.is_grad_enabled():
        return op(x, *args)
    with BELOW_AUTOGRAD():
        return op(x, *args)
