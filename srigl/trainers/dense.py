"""``dense``: no masks at all; the reference point."""

from __future__ import annotations

from srigl.trainers import TRAINERS
from srigl.trainers.base import SparseTrainer


@TRAINERS.register("dense")
class DenseTrainer(SparseTrainer):
    """Trains the model dense: ``masks == {}``, ``stats()['global_density'] == 1.0``.

    Accepts the same keyword arguments as the sparse trainers and ignores them.
    """

    sparse = False
    dynamic = False
    needs_dense_grad = False
