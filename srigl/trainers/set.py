"""``set`` (Sparse Evolutionary Training): drop by magnitude, regrow at random."""

from __future__ import annotations

import torch
from torch import Tensor

from srigl.trainers import TRAINERS
from srigl.trainers.base import Kept, Layer, SparseTrainer


@TRAINERS.register("set")
class SETTrainer(SparseTrainer):
    """Drops the f*nnz smallest-magnitude active weights and regrows as many at random
    inactive positions (drawn from the trainer's seeded generator, identical on every rank).
    With ``constant_fan_in=True`` each neuron regrows back to the layer's fan-in."""

    needs_dense_grad = False

    def update_layer(self, layer: Layer, w: Tensor, mask: Tensor, grad: Tensor, f: float) -> Kept:
        """SET on one layer: w/mask/grad [out, F], f(t) -> (kept, new_mask) bool [out, F]."""
        scores = torch.rand(mask.shape, generator=self.generator).to(w.device)
        return self.drop_and_grow(layer, w, mask, scores, f)
