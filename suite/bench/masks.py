"""SRigL-like constant fan-in masks for benchmarked models (random positions per neuron, seeded).

Each layer's mask comes from :func:`srigl.masks.constant_fan_in_mask` (the one builder:
B = floor(numel * (1 - sparsity)), k = floor(B / n_active)).
"""

from __future__ import annotations

import torch
from torch import nn

from srigl.masks import SparsityTooHighError, constant_fan_in_mask

__all__ = ["SparsityTooHighError", "model_masks"]


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
        masks[name] = constant_fan_in_mask(
            tuple(w.shape),
            sparsity,
            gen,
            ablate=0.0 if i == last_linear else ablate,
            name=name,
        ).to(w.device)
    return masks
