"""``rigl`` (Rigging the Lottery): drop by magnitude, regrow by dense-gradient magnitude."""

from __future__ import annotations

import math

import torch

from srigl.topology import count, drop_grow_fan_in, drop_grow_unstructured, masked_score
from srigl.trainers import TRAINERS
from srigl.trainers.base import Layer, SparseTrainer


@TRAINERS.register("rigl")
class RigLTrainer(SparseTrainer):
    """Drops the f*nnz smallest-magnitude active weights and regrows the f*nnz positions not
    kept with the largest |dense gradient| (a just-dropped one may come back); nnz is constant.
    With ``constant_fan_in=True`` each neuron regrows back to the layer's fan-in (no ablation).
    """

    registry_name = "rigl"

    def update_layer(
        self,
        layer: Layer,
        weight: torch.Tensor,
        mask: torch.Tensor,
        grad: torch.Tensor,
        drop_fraction: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RigL on one layer: weight/mask/grad [out, F]; returns (kept, new_mask) bool [out, F]."""
        grad_score = masked_score(grad)
        n_on = count(mask)
        n_drop = math.floor(drop_fraction * n_on)
        if not self.constant_fan_in:
            return drop_grow_unstructured(weight, mask, grad_score, n_drop)
        active = mask.any(1)
        k = layer.budget // count(active)
        return drop_grow_fan_in(weight, mask, grad_score, active, n_on - n_drop, k)
