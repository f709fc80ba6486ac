"""Layer-wise densities from one global density: ``uniform``, ``er`` and ``erk``.

Every distribution is a function registered in :data:`DISTRIBUTIONS`::

    densities = layer_densities("erk", {"fc1": (512, 64), "fc2": (10, 512)}, density=0.1)

Layers named in ``dense`` (forced dense by configuration) spend their full size from the budget
``density * N`` (N = total size of all layers); the others share what is left.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence

from backends.registry import Registry
from srigl.errors import BudgetError, SparsityConfigError

Shape = Sequence[int]
DistributionFn = Callable[[Mapping[str, Shape], float, Collection[str]], dict[str, float]]

DISTRIBUTIONS: Registry = Registry("distribution")

__all__ = ["DISTRIBUTIONS", "distribution_names", "layer_densities"]


def distribution_names() -> list[str]:
    """Every registered distribution name, sorted."""
    return DISTRIBUTIONS.names()


def layer_densities(
    name: str,
    shapes: Mapping[str, Shape],
    density: float,
    dense: Collection[str] = (),
    **kwargs: float,
) -> dict[str, float]:
    """Density of every layer under distribution ``name``.

    Args:
        name: a registered distribution ('uniform', 'er', 'erk').
        shapes: {layer name: weight shape}, e.g. (out, in) or (out, in/groups, kh, kw).
        density: global density d = 1 - sparsity, in (0, 1).
        dense: layer names forced dense (density 1.0).
        kwargs: distribution options (``power`` for er/erk).

    Returns:
        {layer name: density in (0, 1]}, such that sum(density_l * numel_l) == d * N.

    Raises:
        UnknownNameError: unknown ``name``. BudgetError: forced-dense layers need more than
        d * N, or nothing is left for the sparse layers.
    """
    if not 0.0 < density < 1.0:
        raise SparsityConfigError(f"density={density!r} is invalid; allowed: 0 < density < 1")
    unknown = set(dense) - set(shapes)
    if unknown:
        raise SparsityConfigError(
            f"dense layers {sorted(unknown)} are not among the layers; allowed: {sorted(shapes)}"
        )
    return DISTRIBUTIONS.get(name)(shapes, density, dense, **kwargs)


def _numel(shape: Shape) -> int:
    return math.prod(int(s) for s in shape)


def _budget_left(shapes: Mapping[str, Shape], density: float, dense: Collection[str]) -> float:
    """d * N minus the full size of the forced-dense layers; BudgetError if not positive."""
    total = sum(_numel(s) for s in shapes.values())
    forced = sum(_numel(shapes[n]) for n in dense)
    left = density * total - forced
    # every layer forced dense is no escape: the total would then be N, not d * N
    if left <= 0:
        raise BudgetError(
            f"density {density:g} of {total} weights gives a budget of {density * total:.0f}, "
            f"but the forced-dense layers {sorted(dense)} already need {forced}; allowed: a "
            "density above forced-dense size / total size "
            f"({forced / total:.4f}), or fewer forced-dense layers"
        )
    return left


@DISTRIBUTIONS.register("uniform")
def uniform(
    shapes: Mapping[str, Shape], density: float, dense: Collection[str] = ()
) -> dict[str, float]:
    """Every layer not forced dense gets the same density; the total is d * N."""
    left = _budget_left(shapes, density, dense)
    sparse_size = sum(_numel(s) for n, s in shapes.items() if n not in dense)
    layer_density = left / sparse_size if sparse_size else 1.0
    if layer_density > 1.0:
        raise BudgetError(f"uniform density {layer_density:g} exceeds 1; allowed: at most 1")
    return {n: (1.0 if n in dense else layer_density) for n in shapes}


def _erdos_renyi(
    shapes: Mapping[str, Shape],
    density: float,
    dense: Collection[str],
    raw: Mapping[str, float],
) -> dict[str, float]:
    """Solve eps so that sum over sparse layers of eps*raw_l*n_l fills the budget left.

    Layers with eps * raw_l > 1 become dense and eps is solved again over the rest.
    """
    forced = set(dense)
    _budget_left(shapes, density, forced)
    total = sum(_numel(s) for s in shapes.values())
    while True:
        left = density * total - sum(_numel(shapes[n]) for n in forced)
        sparse = [n for n in shapes if n not in forced]
        if not sparse:
            break
        denom = sum(raw[n] * _numel(shapes[n]) for n in sparse)
        eps = left / denom
        too_dense = [n for n in sparse if eps * raw[n] > 1.0]
        if not too_dense:
            return {n: (1.0 if n in forced else eps * raw[n]) for n in shapes}
        forced.update(too_dense)
    return {n: 1.0 for n in shapes}


def _register_erdos_renyi(name: str, dims: slice, doc: str) -> DistributionFn:
    """Register distribution ``name``: Erdos-Renyi with raw_l = (sum of the shape's ``dims`` /
    their product) ** power, solved by :func:`_erdos_renyi`; ``doc`` is its docstring."""

    def distribution(
        shapes: Mapping[str, Shape],
        density: float,
        dense: Collection[str] = (),
        power: float = 1.0,
    ) -> dict[str, float]:
        raw = {n: (sum(s[dims]) / _numel(s[dims])) ** power for n, s in shapes.items()}
        return _erdos_renyi(shapes, density, dense, raw)

    distribution.__name__ = distribution.__qualname__ = name
    distribution.__doc__ = doc
    return DISTRIBUTIONS.register(name)(distribution)


erk = _register_erdos_renyi(
    "erk",
    slice(None),
    "Erdos-Renyi-Kernel: raw_l = (sum of the shape's dims / their product) ** power.",
)
er = _register_erdos_renyi(
    "er",
    slice(0, 2),
    "Erdos-Renyi: ERK with the kernel dims left out, raw_l = ((out + in) / (out * in)) ** power.",
)
