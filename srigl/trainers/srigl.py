"""``srigl`` (Structured RigL): RigL under a constant fan-in constraint, with neuron ablation.

Per layer, at an update with drop fraction f (SPEC.md section 2):

1. n_on = nnz, n_drop = floor(f * n_on), n_keep = n_on - n_drop.
2. Salience: the union of the top n_keep active weights by |W| and the top n_drop positions
   by |grad|, both over the whole layer (a position in both counts once);
   c_i = salient count of neuron i. Neurons with c_i < tau = max(1, floor(gamma_sal * k0)),
   k0 = floor(B / out), are ablated (recomputed every update, so a neuron can come back),
   keeping at least ceil(B / fan_in) neurons. The classifier is never ablated unless
   ``ablate_classifier=True``; layers matching ``no_ablation`` neither.
3. Redistribute: k' = floor(B / n_active), and r = B - k' * n_active neurons get k' + 1, so
   the layer holds exactly B. B = k_l * out is the budget every method shares
   (:mod:`srigl.budgets`), so k' = k_l and r = 0 while no neuron is ablated. The r neurons are
   those that keep the most weights after step 4's drop (then the best regrowth score, then the
   lower index), so a neuron holding k' + 1 keeps its extra weight while it keeps them all.
   Condensed, such a layer has fan-in k' + 1 with one zero-valued slot in the other rows.
4. Drop: keep the top n_keep by |W| among the active weights of active neurons; a neuron
   keeping more than its fan-in (k' or k' + 1) keeps its largest.
5. Grow: each active neuron grows its fan-in minus kept_i positions by |grad| within its row;
   new weights start at 0.

With a fixed fan-in (``fan_in``) k' stays the given fan-in (an ablated neuron's budget is not
redistributed, and any number of neurons may survive); with ``n_m`` steps 4-5 run per group of
M inputs: the layer-wide magnitude drop, then each group of an active neuron regrows to N by
|grad| within the group (``srigl.topology.drop_grow_n_m``); an ablated neuron has no weights.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from srigl.errors import SparsityConfigError
from srigl.topology import (
    count,
    masked_score,
    min_active_neurons,
    neurons_to_keep,
    salient_counts,
    weight_salient,
)
from srigl.trainers import TRAINERS
from srigl.trainers.base import Kept, Layer, SparseTrainer, constrained_drop_grow
from srigl.trainers.config import SparseConfig


@TRAINERS.register("srigl")
class SRigLTrainer(SparseTrainer):
    """Structured RigL: constant fan-in and neuron ablation; sparse init on by default."""

    ablates = True
    defaults = {"constant_fan_in": True, "sparse_init": True}

    @classmethod
    def check_config(cls, config: SparseConfig) -> None:
        """SparseTrainer's checks, and constant fan-in (SRigL has no unstructured form).

        Raises:
            SparsityConfigError: ``constant_fan_in=False``.
        """
        super().check_config(config)
        if config.constant_fan_in is False:
            raise SparsityConfigError(
                "constant_fan_in=False is invalid for trainer 'srigl'; allowed: True or None "
                "(use trainer 'rigl' for unstructured sparsity)"
            )

    def update_layer(self, layer: Layer, w: Tensor, mask: Tensor, grad: Tensor, f: float) -> Kept:
        """SRigL steps 1-5 on one layer: w, mask, dense grad [out, F], f(t) -> (kept, new_mask)."""
        n_on = count(mask)
        n_drop = math.floor(f * n_on)
        n_keep = n_on - n_drop
        by_weight = weight_salient(w, mask, n_keep)
        grad_score = masked_score(grad)
        if self.ablation and layer.may_ablate:
            counts = salient_counts(w, mask, grad_score, n_keep, n_drop, by_weight=by_weight)
            k0 = layer.budget // layer.out_features
            tau = max(1, math.floor(self.gamma_sal * k0))
            # a fixed fan-in fits any number of neurons; else B / n_active must fit the fan-in
            fewest = 1 if layer.fixed_fan_in else min_active_neurons(layer.budget, layer.fan_in)
            active = neurons_to_keep(counts, tau, fewest)
        else:
            active = torch.ones(layer.out_features, dtype=torch.bool, device=mask.device)
        # step 4's selection equals the salient-by-|W| set unless a neuron holding weights
        # was just ablated; then it is recomputed over the surviving neurons
        lost = bool((mask.any(1) & ~active).any())
        kept = None if lost else by_weight
        return constrained_drop_grow(layer, w, mask, grad_score, active, n_keep, kept=kept)
