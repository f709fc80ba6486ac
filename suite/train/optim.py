"""Optimizers and learning-rate schedules behind registries (config groups ``optimizer/`` and
``scheduler/``).

Schedules are per optimizer step (``scheduler.step()`` after every optimizer step) and are
given in epochs in the config (warm-up epochs, step milestones), converted with
``steps_per_epoch``. Every schedule is a ``LambdaLR``, so its state dict is plain numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from backends.registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULERS: Registry = Registry("scheduler")


def _param_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list:
    """One group with weight decay; without ``decay_norm_and_bias`` 1-D tensors (biases,
    normalisation scales) go into a second group without decay."""
    if decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def create_optimizer(name: str, model: nn.Module, **options: object) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``model``'s parameters (``UnknownNameError`` if unknown)."""
    return OPTIMIZERS.create(name, model, **options)


@OPTIMIZERS.register("sgd")
def sgd(
    model: nn.Module,
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = False,
    weight_decay: float = 5e-4,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """SGD with (optionally Nesterov) momentum."""
    groups = _param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.SGD(
        groups, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay
    )


@OPTIMIZERS.register("adamw")
def adamw(
    model: nn.Module,
    lr: float = 3e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.3,
    decay_norm_and_bias: bool = False,
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay)."""
    groups = _param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    model: nn.Module,
    lr: float = 0.064,
    alpha: float = 0.9,
    eps: float = 0.0316,
    momentum: float = 0.9,
    weight_decay: float = 1e-5,
    decay_norm_and_bias: bool = True,
) -> torch.optim.Optimizer:
    """RMSprop (the MobileNetV3 recipe: alpha 0.9, eps 0.0316, momentum 0.9)."""
    groups = _param_groups(model, weight_decay, decay_norm_and_bias)
    return torch.optim.RMSprop(
        groups, lr=lr, alpha=alpha, eps=eps, momentum=momentum, weight_decay=weight_decay
    )


# --------------------------------------------------------------------------- schedules


def create_scheduler(
    name: str,
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    total_steps: int,
    **options: object,
) -> LambdaLR:
    """Build schedule ``name``: a ``LambdaLR`` stepped once per optimizer step."""
    if steps_per_epoch < 1 or total_steps < 1:
        raise ValueError(
            f"steps_per_epoch and total_steps must be >= 1, got {steps_per_epoch}, {total_steps}"
        )
    factor = SCHEDULERS.create(name, steps_per_epoch, total_steps, **options)
    return LambdaLR(optimizer, factor)


def _warmup(factor: Callable[[int], float], warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from 1/warmup_steps to 1 over the first ``warmup_steps`` steps."""

    def wrapped(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return factor(step)

    return wrapped


@SCHEDULERS.register("cosine")
def cosine(
    steps_per_epoch: int,
    total_steps: int,
    warmup_epochs: float = 0.0,
    min_factor: float = 0.0,
) -> Callable[[int], float]:
    """Linear warm-up, then cosine decay of the lr factor from 1 to ``min_factor``."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    span = max(total_steps - warm, 1)

    def factor(step: int) -> float:
        t = min(max(step - warm, 0) / span, 1.0)
        return min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return _warmup(factor, warm)


@SCHEDULERS.register("step")
def step(
    steps_per_epoch: int,
    total_steps: int,
    milestones: Iterable[float] = (30, 70, 90),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
    every: float | None = None,
) -> Callable[[int], float]:
    """Linear warm-up, then multiply the lr by ``gamma`` at each milestone epoch and, when
    ``every`` is set, once more every ``every`` epochs (MobileNetV3: 0.973 every 2.4)."""
    warm = int(round(warmup_epochs * steps_per_epoch))
    bounds = sorted(int(round(m * steps_per_epoch)) for m in milestones)
    period = None if every is None else max(int(round(every * steps_per_epoch)), 1)
    if every is not None and every <= 0:
        raise ValueError(f"step schedule: every={every!r} must be a positive number of epochs")

    def factor(step: int) -> float:
        n = sum(step >= b for b in bounds) + (step // period if period else 0)
        return gamma**n

    return _warmup(factor, warm)


@SCHEDULERS.register("constant")
def constant(
    steps_per_epoch: int, total_steps: int, warmup_epochs: float = 0.0
) -> Callable[[int], float]:
    """A constant lr after an optional linear warm-up."""
    return _warmup(lambda _step: 1.0, int(round(warmup_epochs * steps_per_epoch)))
