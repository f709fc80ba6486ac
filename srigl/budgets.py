"""Equal budgets: one constant fan-in allocation of the non-zeros, shared by every method.

Each sparse layer l (out_l neurons of dense fan-in F_l, density d_l from the distribution)
gets an integer fan-in k_l and the budget B_l = k_l * out_l, whatever the method: SRigL keeps
k_l per neuron, RigL/SET/static hold the same B_l unstructured. So every method holds the same
non-zeros per layer at init. The k_l are chosen so that the global count stays as close as
possible to the target sum_l d_l * numel_l (= d * N minus the forced-dense layers):

1. ideal k*_l = d_l * F_l;
2. a layer whose k*_l < 1 gets k_l = 1 and the other layers' k*_l are scaled down to pay for
   it (repeated until no layer is below 1, as ERK redistributes densities above 1);
3. every k_l = floor(k*_l), then the remainder is handed out one neuron-fan-in at a time (+1 to
   k_l, i.e. + out_l weights) in order of the largest fractional part, while that brings the
   total closer to the target (largest remainder); k_l <= F_l throughout.

Each k_l is then within 1 of its (re-scaled) ideal, and the global count within about half the
largest out_l of the target.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from srigl.errors import BudgetError

__all__ = ["constant_fan_in_allocation"]


def _raise_ideal_below_one(
    ideal: Mapping[str, float], out: Mapping[str, int], target: float
) -> dict[str, float]:
    """Step 2: k*_l < 1 becomes 1; the other layers are scaled to keep the target."""
    ones: set[str] = set()
    scale = 1.0
    while True:
        free = [n for n in ideal if n not in ones]
        raw = sum(ideal[n] * out[n] for n in free)
        scale = (target - sum(out[n] for n in ones)) / raw if raw else 0.0
        low = [n for n in free if ideal[n] * scale < 1.0]
        if not low:
            return {n: 1.0 if n in ones else ideal[n] * scale for n in ideal}
        ones.update(low)


def constant_fan_in_allocation(
    shapes: Mapping[str, tuple[int, int]],
    densities: Mapping[str, float],
    *,
    sparsity: float,
    other_numel: int = 0,
) -> dict[str, int]:
    """The fan-in k_l of every sparse layer (see the module docstring); B_l = k_l * out_l.

    Args:
        shapes: {layer name: (out_l, dense fan-in F_l)} of the sparse layers, in order.
        densities: {layer name: d_l in (0, 1)}, the distribution's density of each layer.
        sparsity: the global sparsity asked for (named in the error).
        other_numel: weights of the eligible layers that are not in ``shapes`` (dense ones),
            used only to name the largest usable sparsity in the error.

    Returns:
        {layer name: k_l}, 1 <= k_l <= F_l.

    Raises:
        BudgetError: even k_l = 1 in every layer (one weight per neuron) exceeds the target.
    """
    out = {n: int(s[0]) for n, s in shapes.items()}
    fan_in = {n: int(s[1]) for n, s in shapes.items()}
    ideal = {n: float(densities[n]) * fan_in[n] for n in shapes}
    target = round(sum(ideal[n] * out[n] for n in shapes), 6)
    neurons = sum(out.values())
    if neurons > math.floor(target + 0.5):
        total = sum(out[n] * fan_in[n] for n in shapes) + other_numel
        largest = 1.0 - (neurons + other_numel) / total
        raise BudgetError(
            f"sparsity={sparsity!r} leaves {target:.0f} non-zeros for the {neurons} neurons of "
            f"the sparse layers; allowed: at least 1 weight per neuron, sparsity <= "
            f"{largest:.6f} on this model (or keep layers dense)"
        )
    real = _raise_ideal_below_one(ideal, out, target)
    k = {n: min(fan_in[n], max(1, math.floor(real[n] + 1e-9))) for n in shapes}
    rest = target - sum(k[n] * out[n] for n in shapes)
    order = sorted(shapes, key=lambda n: real[n] - k[n], reverse=True)  # stable: layer order
    for n in order:
        if k[n] < fan_in[n] and out[n] < 2 * rest:  # +out_l brings the total closer
            k[n] += 1
            rest -= out[n]
    return k
