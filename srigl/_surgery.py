"""Model-surgery helpers shared by :mod:`srigl.condense` (Linear layers) and
:mod:`srigl.condense_conv` (convolutions)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in the slot ``name`` (a dotted module path) of ``root``."""
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


def run_in_eval(modules: Iterable[nn.Module], x: torch.Tensor) -> torch.Tensor:
    """``x`` through ``modules`` in order, each in eval mode (Dropout = identity); every
    module's training flag is restored afterwards."""
    for mod in modules:
        was_training = mod.training
        mod.eval()
        try:
            x = mod(x)
        finally:
            mod.train(was_training)
    return x


def refill(kept: torch.Tensor, lost: torch.Tensor) -> torch.Tensor | None:
    """``kept`` [rows, cols] plus ``lost[r]`` extra entries per row at its first free columns
    (constant fan-in after removing columns); None where a row has too few free columns."""
    free = ~kept
    if bool((free.sum(dim=1) < lost).any()):
        return None
    rank = free.cumsum(dim=1)
    return kept | (free & (rank <= lost.unsqueeze(1)))


def add_to_bias(module: nn.Module, fold: torch.Tensor) -> None:
    """``module.bias += fold`` as a new Parameter (the bias may be shared with another module:
    never in place); a module without a bias gets ``fold``."""
    module.bias = nn.Parameter(fold if module.bias is None else module.bias + fold)


def keep_units(first: nn.Module, second: nn.Module, keep: torch.Tensor) -> None:
    """Keep only the outputs ``keep`` (bool) of ``first`` (a Linear's neurons or a conv's output
    channels) and the matching inputs of ``second`` (the same kind of layer), as new
    Parameters; their in/out feature (channel) counts follow."""
    first.weight = nn.Parameter(first.weight[keep].clone())
    if first.bias is not None:
        first.bias = nn.Parameter(first.bias[keep].clone())
    second.weight = nn.Parameter(second.weight[:, keep].clone())
    width = int(keep.sum())
    if isinstance(first, nn.Conv2d):
        first.out_channels = second.in_channels = width
    else:
        first.out_features = second.in_features = width
