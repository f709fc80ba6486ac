"""One trainer per weight: which live trainer's gradient hooks a parameter carries, and the
check that the optimizer owns the sparse weights."""

from __future__ import annotations

import weakref
from typing import Any

import torch

from srigl.errors import OptimizerMismatchError, TrainerConflictError

#: id(parameter) -> the live trainer whose gradient hooks it carries (one trainer per weight)
_OWNERS: dict[int, weakref.ref] = {}


class ParameterOwnership:
    """Mixin of :class:`~srigl.trainers.base.SparseTrainer`: claims its sparse weights."""

    layers: dict[str, Any]
    optimizer: torch.optim.Optimizer
    _closed: bool
    name: str

    def _check_optimizer(self) -> None:
        owned = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [name for name, layer in self.layers.items() if id(layer.param) not in owned]
        if missing:
            raise OptimizerMismatchError(
                f"the optimizer does not own the sparse parameters {missing}; allowed: an "
                "optimizer built over the model's parameters (e.g. SGD(model.parameters()))"
            )

    def _claim_parameters(self) -> None:
        """Refuse weights that carry another live trainer's hooks, then claim them."""
        taken, other = [], None
        for name, layer in self.layers.items():
            ref = _OWNERS.get(id(layer.param))
            owner = ref() if ref is not None else None
            if owner is not None and owner is not self and owner.owns(layer.param):
                taken.append(name)
                other = owner
        if taken:
            raise TrainerConflictError(
                f"the parameters {taken} already carry the gradient hooks of another "
                f"{other.name!r} trainer built on this model; call close() on it first (or "
                "build trainers with `with srigl.create_trainer(...) as trainer:`), or build "
                "the model again"
            )
        for layer in self.layers.values():
            _OWNERS[id(layer.param)] = weakref.ref(self)

    def _release_parameters(self) -> None:
        for layer in self.layers.values():
            ref = _OWNERS.get(id(layer.param))
            if ref is not None and ref() in (self, None):
                del _OWNERS[id(layer.param)]

    def owns(self, param: torch.Tensor) -> bool:
        """Whether ``param`` is one of this (open) trainer's sparse weights, hooks attached."""
        return not self._closed and any(layer.param is param for layer in self.layers.values())
