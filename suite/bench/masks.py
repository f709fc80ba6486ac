"""SRigL-like constant fan-in masks for benchmarks (random positions per neuron, seeded).

The layer budget follows SPEC.md: B = floor(out * in * (1 - sparsity)); with n_active
non-ablated neurons each keeps k = floor(B / n_active) inputs chosen at random.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from srigl.masks import random_fan_in_mask

__all__ = ["SparsityTooHighError", "fan_in_mask", "model_masks"]


class SparsityTooHighError(ValueError):
    """The budget leaves the neurons less than one input each (k = 0)."""


def fan_in_mask(
    out_features: int,
    in_features: int,
    sparsity: float,
    generator: torch.Generator,
    ablate: float = 0.0,
    name: str = "",
) -> torch.Tensor:
    """A constant fan-in bool mask [out, in] at ``sparsity`` with a fraction ``ablate`` of the
    neurons (random ones) switched off; drawn on the CPU from ``generator``.

    Raises:
        ValueError: ``sparsity`` not in [0, 1) or ``ablate`` not in [0, 1).
        SparsityTooHighError: k = floor(B / n_active) would be 0 (names the layer).
    """
    if not 0.0 <= float(sparsity) < 1.0:
        raise ValueError(f"{name}: sparsity {sparsity!r} must be in [0, 1)")
    if not 0.0 <= float(ablate) < 1.0:
        raise ValueError(f"{name}: ablate {ablate!r} must be in [0, 1)")
    # 1e-9 absorbs float error: 2000 * (1 - 0.9) is 199.99999999999997, the budget is 200.
    budget = math.floor(out_features * in_features * (1.0 - float(sparsity)) + 1e-9)
    n_off = math.floor(out_features * float(ablate))
    n_active = out_features - n_off
    k = min(in_features, budget // n_active)
    if k < 1:
        raise SparsityTooHighError(
            f"layer {name!r} ({in_features} -> {out_features}): sparsity {sparsity} leaves k = 0 "
            "inputs "
            f"per neuron; use a sparsity below {1 - n_active / (out_features * in_features):.6f}"
        )
    active = torch.ones(out_features, dtype=torch.bool)
    if n_off:
        active[torch.randperm(out_features, generator=generator)[:n_off]] = False
    return random_fan_in_mask((out_features, in_features), k, generator, active)


def model_masks(
    model: nn.Module, sparsity: float, seed: int = 0, ablate: float = 0.0
) -> dict[str, torch.Tensor]:
    """Constant fan-in masks for every ``nn.Linear`` weight and every attention
    ``in_proj_weight`` of ``model`` ({parameter name: bool [out, in]}), convolutions left dense.

    ``ablate`` applies to every layer except the last Linear (the classifier).
    """
    gen = torch.Generator().manual_seed(int(seed))
    targets: list[tuple[str, torch.Tensor]] = []
    for mod_name, mod in model.named_modules():
        prefix = f"{mod_name}." if mod_name else ""
        if isinstance(mod, nn.Linear):
            targets.append((prefix + "weight", mod.weight))
        elif isinstance(mod, nn.MultiheadAttention) and mod.in_proj_weight is not None:
            targets.append((prefix + "in_proj_weight", mod.in_proj_weight))
    last_linear = max(
        (i for i, (n, _) in enumerate(targets) if not n.endswith("in_proj_weight")), default=-1
    )
    masks = {}
    for i, (name, w) in enumerate(targets):
        masks[name] = fan_in_mask(
            w.shape[0],
            w.shape[1],
            sparsity,
            gen,
            ablate=0.0 if i == last_linear else ablate,
            name=name,
        ).to(w.device)
    return masks
