"""``rigl`` (Rigging the Lottery): drop by magnitude, regrow by dense-gradient magnitude."""

from __future__ import annotations

import torch

from srigl.topology import masked_score
from srigl.trainers import TRAINERS
from srigl.trainers.base import Layer, SparseTrainer


@TRAINERS.register("rigl")
class RigLTrainer(SparseTrainer):
    """Drops the f*nnz smallest-magnitude active weights and regrows the f*nnz positions not
    kept with the largest |dense gradient| (a just-dropped one may come back); nnz is constant.
    With ``constant_fan_in=True`` each neuron regrows back to the layer's fan-in (no ablation).
    """

    def update_layer(
        self,
        layer: Layer,
        weight: torch.Tensor,
        mask: torch.Tensor,
        grad: torch.Tensor,
        drop_fraction: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RigL on one layer: weight/mask/grad [out, F]; returns (kept, new_mask) bool [out, F]."""
        return self.drop_and_grow(layer, weight, mask, masked_score(grad), drop_fraction)
