"""Sparse trainers behind one registry: ``dense``, ``static``, ``set``, ``rigl``, ``srigl``.

::

    trainer = create_trainer("srigl", model, optimizer, sparsity=0.9, total_steps=10_000)
    trainer = create_trainer("srigl", model, optimizer, config=SparseConfig(sparsity=0.9,
                                                                            total_steps=10_000))

A new trainer is one module in this package with one ``@TRAINERS.register("name")`` class.
"""

from __future__ import annotations

from typing import Any

import torch

from backends.registry import Registry, UnknownNameError, import_submodules
from srigl.trainers.config import SparseConfig

TRAINERS: Registry = Registry("trainer")

__all__ = ["TRAINERS", "SparseConfig", "UnknownNameError", "create_trainer", "trainer_names"]


def trainer_names() -> list[str]:
    """Every registered trainer name, sorted."""
    return TRAINERS.names()


def create_trainer(
    name: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    config: SparseConfig | None = None,
    **options: Any,
) -> Any:
    """Build trainer ``name`` for ``model`` trained by ``optimizer``.

    The options come either as one :class:`SparseConfig` (``config=``; its ``None`` fields take
    the trainer's defaults) or as its fields by keyword (``**options``), not both.

    Raises:
        UnknownNameError: ``name`` is not registered (a ValueError listing the known names).
        SparsityConfigError: options given with ``config``, an unknown option or a bad value.
    """
    if config is not None:
        options["config"] = config
    return TRAINERS.create(name, model, optimizer, **options)


import_submodules(__name__, skip=("base",))
