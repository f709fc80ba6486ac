"""``rigl`` (Rigging the Lottery): drop by magnitude, regrow by dense-gradient magnitude."""

from __future__ import annotations

from torch import Tensor

from srigl.topology import masked_score
from srigl.trainers import TRAINERS
from srigl.trainers.base import Kept, Layer, SparseTrainer


@TRAINERS.register("rigl")
class RigLTrainer(SparseTrainer):
    """Drops the f*nnz smallest-magnitude active weights and regrows the f*nnz positions not
    kept with the largest |dense gradient| (a just-dropped one may come back); nnz is constant.
    With ``constant_fan_in=True`` each neuron regrows back to the layer's fan-in (no ablation).
    """

    def update_layer(self, layer: Layer, w: Tensor, mask: Tensor, grad: Tensor, f: float) -> Kept:
        """RigL on one layer: w/mask/grad [out, F], f(t) -> (kept, new_mask) bool [out, F]."""
        return self.drop_and_grow(layer, w, mask, masked_score(grad), f)
