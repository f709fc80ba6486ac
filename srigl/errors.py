"""Exceptions of the sparse training library; every bad-input error is a ``ValueError``.

Run-time errors: ``NonFiniteGradientError`` (a ``FloatingPointError``) and
``GradScalerOrderError`` (a ``RuntimeError``).
"""

from __future__ import annotations

import math
import numbers


class SparsityConfigError(ValueError):
    """A trainer option is out of range; the message names the value and what is allowed."""


class BudgetError(SparsityConfigError):
    """The parameter budget cannot be met (e.g. forced-dense layers already exceed it)."""


class EmptyLayerError(SparsityConfigError):
    """A layer's budget leaves an active neuron (or the whole layer) with no weight at all.

    Kept for compatibility (public, and code may still catch it): since the equal budgets
    (:func:`srigl.budgets.constant_fan_in_allocation`) every sparse layer gets k >= 1, so no
    trainer raises it any more."""


class OptimizerMismatchError(ValueError):
    """The optimizer does not own every sparse parameter of the model."""


class StateDictError(ValueError):
    """A trainer state dict does not match the trainer it is loaded into."""


class TrainerConflictError(ValueError):
    """The model's sparse parameters already carry another live trainer's gradient hooks."""


class NonFiniteGradientError(FloatingPointError):
    """A gradient holds NaN or inf (without a GradScaler, which would skip the step instead);
    the message names the layer and the step."""


class GradScalerOrderError(RuntimeError):
    """``trainer.step()`` cannot tell from the GradScaler whether the step was skipped; the
    message says in which order to call ``scaler.step``, ``trainer.step`` and ``scaler.update``."""


def require_int(
    name: str, value: object, allowed: str, error: type[Exception] = SparsityConfigError
) -> int:
    """``value`` as an int (any integral type; a bool is not one), else ``error`` naming it:
    "<name>=<value> is not an integer; allowed: <allowed>"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise error(f"{name}={value!r} is not an integer; allowed: {allowed}")
    return int(value)


def require_real(
    name: str, value: object, allowed: str, error: type[Exception] = SparsityConfigError
) -> float:
    """``value`` as a finite float (any real type; a bool is not one), else ``error`` naming it
    ("is not a number" / "is not finite")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise error(f"{name}={value!r} is not a number; allowed: {allowed}")
    out = float(value)
    if not math.isfinite(out):
        raise error(f"{name}={value!r} is not finite; allowed: {allowed}")
    return out
