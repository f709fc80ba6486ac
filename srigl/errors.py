"""Exceptions of the sparse training library; every bad-input error is a ``ValueError``."""

from __future__ import annotations


class SparsityConfigError(ValueError):
    """A trainer option is out of range; the message names the value and what is allowed."""


class BudgetError(SparsityConfigError):
    """The parameter budget cannot be met (e.g. forced-dense layers already exceed it)."""


class EmptyLayerError(SparsityConfigError):
    """A layer's budget leaves an active neuron (or the whole layer) with no weight at all."""


class OptimizerMismatchError(ValueError):
    """The optimizer does not own every sparse parameter of the model."""


class StateDictError(ValueError):
    """A trainer state dict does not match the trainer it is loaded into."""
