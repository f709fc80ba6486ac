"""What acts on every feature (neuron, channel) separately in eval mode, so that neuron j's
output depends on neuron j's input alone: the modules, functions and tensor methods through
which ``condense(..., structured=True)`` may fold an ablated unit's constant output.

Extend the module set with :func:`register_elementwise`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ELEMENTWISE_FUNCTIONS",
    "ELEMENTWISE_METHODS",
    "ELEMENTWISE_MODULES",
    "is_elementwise",
    "register_elementwise",
]

# Modules that act on every feature separately (eval mode), so neuron j's output depends on
# neuron j's input alone. Extend with :func:`register_elementwise`.
ELEMENTWISE_MODULES: set[type[nn.Module]] = {
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
}

# Functions that act on every channel separately (their constant-input value is computed).
ELEMENTWISE_FUNCTIONS: set[Callable[..., Any]] = {
    F.relu,
    torch.relu,
    F.relu6,
    F.hardswish,
    F.hardsigmoid,
    F.silu,
    F.gelu,
    F.leaky_relu,
    torch.sigmoid,
    torch.tanh,
    F.dropout,
}
ELEMENTWISE_METHODS = {"relu", "sigmoid", "tanh", "relu_", "sigmoid_", "tanh_"}


def register_elementwise(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare module class ``cls`` elementwise (usable as a decorator); see ``structured``."""
    ELEMENTWISE_MODULES.add(cls)
    return cls


def is_elementwise(module: nn.Module) -> bool:
    """Whether ``module``'s class is in :data:`ELEMENTWISE_MODULES` (exact type)."""
    return type(module) in ELEMENTWISE_MODULES
