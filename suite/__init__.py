"""The experiment harness: Hydra apps, model and data-set registries, runners, results, reports."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_exports(package: str, module: str, names: Iterable[str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``module`` on first use of one of
    ``names`` (so ``from suite.train import run`` works without importing the whole training
    stack whenever a sibling module such as ``suite.train.checkpoint`` is imported)."""
    wanted = frozenset(names)

    def __getattr__(name: str) -> Any:
        if name in wanted:
            return getattr(importlib.import_module(module), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
