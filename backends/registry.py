"""The one registry mechanism of the project.

A :class:`Registry` maps a name to a factory (a class or a function). Entries are added with
the :meth:`Registry.register` decorator, looked up with :meth:`Registry.get` and built with
:meth:`Registry.create`. There is one instance per kind of thing (for example the GEMM
backends in ``backends``, the trainers and layer distributions in ``srigl``, the models, data
sets, optimizers and loggers in ``suite``). It lives in the lowest layer so that every other
layer can use it without importing upwards.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class UnknownNameError(ValueError):
    """Raised when a name is not registered; the message lists the known names."""


class Registry(Generic[T]):
    """A name -> factory table with a decorator to fill it.

    Args:
        kind: what the entries are ("trainer", "backend", "model", "dataset"); used in errors.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        """Decorator that registers a factory under ``name`` (default: its ``__name__``).

        A class registered this way also gets ``registry_name = name`` (unless it defines one
        itself), so the name is stated once, in the decorator. Registering a second, different
        factory under a taken name is an error.
        """

        def decorator(factory: T) -> T:
            key = name if name is not None else getattr(factory, "__name__", None)
            if not isinstance(key, str) or not key:
                raise ValueError(f"{self.kind} registry: invalid name {key!r}")
            existing = self._entries.get(key)
            if existing is not None and existing is not factory:
                raise ValueError(
                    f"{self.kind} {key!r} is already registered (by {existing!r}); "
                    "choose another name"
                )
            self._entries[key] = factory
            if isinstance(factory, type) and "registry_name" not in vars(factory):
                factory.registry_name = key
            return factory

        return decorator

    def get(self, name: str) -> T:
        """Return the factory registered under ``name``.

        Raises:
            UnknownNameError: ``name`` is not registered; the message lists the known names.
        """
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            known = ", ".join(self.names()) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the entry ``name`` by calling its factory with ``*args, **kwargs``."""
        return self.get(name)(*args, **kwargs)

    def names(self, pattern: str | None = None) -> list[str]:
        """All registered names, sorted; with ``pattern`` only those matching the fnmatch glob."""
        keys = sorted(self._entries)
        if pattern is not None:
            keys = [k for k in keys if fnmatch.fnmatchcase(k, pattern)]
        return keys

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"


def import_submodules(package: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Import every direct submodule of ``package`` so that their decorators register entries.

    This is what makes "a new entry is one file plus one decorator" true: dropping a module into
    the package is enough; no central list is edited. Modules whose name starts with ``_`` and
    those named in ``skip`` are left alone.

    Returns:
        The imported module names, sorted.
    """
    import importlib
    import pkgutil

    pkg = importlib.import_module(package)
    done = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_") or info.name in skip:
            continue
        importlib.import_module(f"{package}.{info.name}")
        done.append(info.name)
    return done
