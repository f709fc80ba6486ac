"""srigl: dynamic sparse training (SRigL, RigL, SET, static, dense) as a library.

::

    import srigl
    trainer = srigl.create_trainer("srigl", model, optimizer, sparsity=0.9,
                                   distribution="erk", total_steps=10_000)
    for x, y in loader:
        loss = criterion(model(x), y); loss.backward()
        optimizer.step(); trainer.step(); optimizer.zero_grad()
    small = srigl.condense(model, trainer.masks, backend="fused")
"""

from srigl.condense import condense, load_condensed
from srigl.trainers import TRAINERS, SparseConfig, create_trainer, trainer_names

__all__ = [
    "TRAINERS",
    "SparseConfig",
    "condense",
    "create_trainer",
    "load_condensed",
    "trainer_names",
]
