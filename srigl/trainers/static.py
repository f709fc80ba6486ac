"""``static``: random masks at init, never updated."""

from __future__ import annotations

from srigl.trainers import TRAINERS
from srigl.trainers.base import SparseTrainer


@TRAINERS.register("static")
class StaticTrainer(SparseTrainer):
    """Fixed random sparse topology (unstructured, or constant fan-in with
    ``constant_fan_in=True``); ``total_steps`` is not needed."""

    dynamic = False
    needs_dense_grad = False
