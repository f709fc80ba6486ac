"""Sparse trainers behind one registry: ``dense``, ``static``, ``set``, ``rigl``, ``srigl``.

::

    trainer = create_trainer("srigl", model, optimizer, sparsity=0.9, total_steps=10_000)

A new trainer is one module in this package with one ``@TRAINERS.register("name")`` class.
"""

from __future__ import annotations

from typing import Any

import torch

from backends.registry import Registry, UnknownNameError, import_submodules

TRAINERS: Registry = Registry("trainer")

__all__ = ["TRAINERS", "UnknownNameError", "create_trainer", "trainer_names"]


def trainer_names() -> list[str]:
    """Every registered trainer name, sorted."""
    return TRAINERS.names()


def create_trainer(
    name: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, **kwargs: Any
) -> Any:
    """Build trainer ``name`` for ``model`` trained by ``optimizer``.

    Raises:
        UnknownNameError: ``name`` is not registered (a ValueError listing the known names).
    """
    return TRAINERS.create(name, model, optimizer, **kwargs)


import_submodules(__name__, skip=("base",))
