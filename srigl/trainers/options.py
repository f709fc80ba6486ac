"""Up-front validation of every ``create_trainer`` argument, before any mask or compute.

Each check names the argument, the bad value and what is allowed::

    sparsity='abc' is not a number; allowed: 0 < sparsity < 1
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from srigl.distributions import distribution_names
from srigl.errors import SparsityConfigError
from srigl.errors import require_int as _integer
from srigl.errors import require_real as _real
from srigl.schedule import check_schedule


def _flag(name: str, value: Any, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bool):
        allowed = "True, False or None" if optional else "True or False"
        raise SparsityConfigError(f"{name}={value!r} is not a bool; allowed: {allowed}")


def _globs(name: str, value: Any) -> list[str]:
    """A list of fnmatch globs; a bare string is refused (it would be read letter by letter)."""
    allowed = 'a list of fnmatch globs, e.g. ["head", "*.attn.*"]'
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise SparsityConfigError(f"{name}={value!r} is not a list; allowed: {allowed}")
    items = list(value)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise SparsityConfigError(f"{name} holds {bad[0]!r}, not a string; allowed: {allowed}")
    return items


def check_trainer_arguments(
    *,
    model: Any,
    optimizer: Any,
    sparsity: Any,
    distribution: Any,
    total_steps: Any,
    delta_t: Any,
    alpha: Any,
    t_end_fraction: Any,
    grad_accumulation_n: Any,
    gamma_sal: Any,
    ablation: Any,
    dense_layers: Any,
    no_ablation: Any,
    attention_layers: Any,
    dense_first_layer: Any,
    dense_classifier: Any,
    ablate_classifier: Any,
    sparse_attention: Any,
    constant_fan_in: Any,
    sparse_init: Any,
    grad_scaler: Any,
    seed: Any,
    erk_power: Any,
    check_finite: Any,
    sparse: bool = True,
) -> None:
    """Check the type and range of every trainer argument (see ``SparseTrainer``).

    ``sparse=False`` (the ``dense`` trainer) skips the range of ``sparsity``. The schedule's
    values, including ``grad_accumulation_n <= delta_t``, go through
    :func:`srigl.schedule.check_schedule`; what depends on the model (globs that must match a
    layer, budgets) is checked where it is used.

    ``model=None`` / ``optimizer=None`` skip those two (a config checked before they exist).

    Raises:
        SparsityConfigError: (a ValueError) naming the argument, its value and what is allowed.
    """
    if model is not None and not isinstance(model, nn.Module):
        raise SparsityConfigError(f"model={type(model).__name__} is not an nn.Module")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise SparsityConfigError(
            f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer"
        )
    s = _real("sparsity", sparsity, "0 < sparsity < 1")
    if sparse and not 0.0 < s < 1.0:  # 'dense' ignores it (its records carry sparsity=0.0)
        raise SparsityConfigError(f"sparsity={sparsity!r} is invalid; allowed: 0 < sparsity < 1")
    if not isinstance(distribution, str):
        raise SparsityConfigError(
            f"distribution={distribution!r} is not a string; allowed: {distribution_names()}"
        )
    check_schedule(total_steps, delta_t, alpha, t_end_fraction, grad_accumulation_n)
    g = _real("gamma_sal", gamma_sal, "a finite number >= 0")
    if g < 0:
        raise SparsityConfigError(f"gamma_sal={gamma_sal!r} is invalid; allowed: >= 0")
    for name, value in (
        ("ablation", ablation),
        ("dense_first_layer", dense_first_layer),
        ("dense_classifier", dense_classifier),
        ("ablate_classifier", ablate_classifier),
        ("sparse_attention", sparse_attention),
        ("check_finite", check_finite),
    ):
        _flag(name, value)
    _flag("constant_fan_in", constant_fan_in, optional=True)
    _flag("sparse_init", sparse_init, optional=True)
    for name, value in (
        ("dense_layers", dense_layers),
        ("no_ablation", no_ablation),
        ("attention_layers", attention_layers),
    ):
        _globs(name, value)
    _integer("seed", seed, "an integer")
    _real("erk_power", erk_power, "a finite number")
    if grad_scaler is not None:
        for attr in ("get_scale", "is_enabled"):
            if not hasattr(grad_scaler, attr):
                raise SparsityConfigError(
                    f"grad_scaler={grad_scaler!r} has no {attr}(); allowed: a "
                    "torch.amp.GradScaler or None"
                )


def check_trainer_options(name: str, **options: Any) -> None:
    """Check trainer ``name``'s keyword arguments before the model or data exist (a config).

    Options not given take the trainer's defaults. Used by the harness to refuse a bad config
    before any data is loaded or compute spent.

    Raises:
        UnknownNameError: no trainer ``name``. SparsityConfigError: an unknown option, or a
            value of the wrong type or range (the message names it).
    """
    from srigl.trainers import TRAINERS
    from srigl.trainers.base import SparseTrainer

    cls = TRAINERS.get(name)
    params = inspect.signature(SparseTrainer.__init__).parameters
    known = [p for p in params if p not in ("self", "model", "optimizer")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise SparsityConfigError(
            f"trainer {name!r}: unknown options {unknown}; allowed: {sorted(known)}"
        )
    values = {p: params[p].default for p in known}
    values.update(options)
    check_trainer_arguments(model=None, optimizer=None, sparse=cls.sparse, **values)
