"""The trainer's view of one sparse layer, and the choice of the layers and their budgets.

``build_layers`` turns the sparse-eligible weights into :class:`Layer` records: which are kept
dense (options and the density distribution), each one's density and budget B_l, and whether
SRigL may ablate its neurons.

Equal budgets: every method (static, SET, RigL, SRigL...) gets the same budgets, from one
constant fan-in allocation (:func:`srigl.budgets.constant_fan_in_allocation`): layer l keeps
k_l >= 1 weights per neuron, B_l = k_l * out_l, the k_l chosen so that the global count is as
close as possible to the distribution's d * N. SRigL holds k_l per neuron, the unstructured
methods hold B_l anywhere in the layer. After ablating neurons SRigL's n_active neurons keep
k' = floor(B_l / n_active) each and r = B_l - k' * n_active of them one more (:meth:`Layer.
extra_for`), so it still holds exactly B_l; such a layer condenses at fan-in k' + 1 with one
zero-valued slot in each row that holds k' (:func:`backends.condensed.condense_layer`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from srigl.budgets import constant_fan_in_allocation
from srigl.distributions import layer_densities
from srigl.errors import SparsityConfigError
from srigl.masks import SparseParam, check_globs, forced_dense_names, matches_any

#: what a trainer's rule returns for one layer: (kept, new_mask), both bool [out, F]
Kept = tuple[Tensor, Tensor]


@dataclass
class Layer:
    """A sparse layer as the trainer sees it.

    Attributes:
        name: unwrapped parameter name; param: the weight; density: budget / numel, its
        allocated density; budget: B_l = k_l * out, k_l the layer's fan-in of the shared
        constant fan-in allocation (the same for every method); may_ablate: SRigL may switch
        its neurons off;
        is_classifier: the last eligible layer of the model.
        fixed_fan_in: the fan-in every active neuron keeps whatever the number of active
            neurons (options ``fan_in`` / ``n_m``: budget = fixed_fan_in * out), or None (the
            fan-in is then floor(budget / n_active), k_l while no neuron is ablated, and the
            remainder goes to some neurons: :meth:`extra_for`).
        n_m: (N, M): every group of M consecutive inputs of an active neuron holds exactly N
            non-zeros (its flattened fan-in is a multiple of M); None without that constraint.
    """

    name: str
    param: nn.Parameter
    density: float
    budget: int
    may_ablate: bool
    is_classifier: bool
    fixed_fan_in: int | None = None
    n_m: tuple[int, int] | None = None

    @property
    def out_features(self) -> int:
        """Number of neurons (rows)."""
        return int(self.param.shape[0])

    @property
    def fan_in(self) -> int:
        """Dense fan-in of a neuron: the product of every dim but the first."""
        return self.param[0].numel()

    def fan_in_for(self, n_active: int) -> int:
        """The fan-in each of ``n_active`` (>= 1) active neurons keeps at least: the fixed
        fan-in, else k' = floor(B_l / n_active)."""
        return self.fixed_fan_in or self.budget // n_active

    def extra_for(self, n_active: int) -> int:
        """How many of ``n_active`` (>= 1) active neurons keep k' + 1 so that the layer holds
        exactly B_l: B_l - k' * n_active (0 with a fixed fan-in or N:M, whose budget follows
        the neurons)."""
        if self.fixed_fan_in or self.n_m is not None:
            return 0
        return self.budget - self.fan_in_for(n_active) * n_active


def build_layers(
    eligible: list[SparseParam],
    *,
    sparsity: float,
    distribution: str,
    dense_layers: Iterable[str],
    no_ablation: Iterable[str],
    dense_first_layer: bool,
    dense_classifier: bool,
    ablate_classifier: bool,
    erk_power: float,
    sparse_attention: bool = True,
    fan_in: int | tuple[tuple[str, int], ...] | None = None,
    n_m: tuple[int, int] | None = None,
) -> dict[str, Layer]:
    """The sparse layers among ``eligible`` (in order), keyed by parameter name.

    Layers whose density is 1 (forced dense or by the distribution) are left out, and so is a
    layer whose allocated fan-in k_l equals its dense fan-in. The budgets are the shared
    constant fan-in allocation (module docstring), the same whether the trainer is constant
    fan-in or unstructured. With ``fan_in`` or ``n_m`` the budgets follow from them
    (:func:`fixed_fan_in_layers`) and ``sparsity`` / ``distribution`` are not used.

    Raises:
        ValueError: a ``no_ablation`` glob that matches nothing. BudgetError: the sparsity
            leaves fewer weights than one per neuron of the sparse layers.
    """
    forced = forced_dense_names(
        eligible, dense_layers, dense_first_layer, dense_classifier, sparse_attention
    )
    if fan_in is not None or n_m is not None:
        return fixed_fan_in_layers(eligible, forced, fan_in, n_m, no_ablation, ablate_classifier)
    shapes = {p.name: p.shape for p in eligible}
    kwargs = {} if distribution == "uniform" else {"power": erk_power}
    densities = layer_densities(distribution, shapes, 1.0 - sparsity, dense=forced, **kwargs)
    sparse = [p for p in eligible if densities[p.name] < 1.0]
    ks = constant_fan_in_allocation(
        {p.name: (p.out_features, p.fan_in) for p in sparse},
        densities,
        sparsity=sparsity,
        other_numel=sum(p.numel for p in eligible) - sum(p.numel for p in sparse),
    )
    may_ablate = _ablation_rule(eligible, no_ablation, ablate_classifier)
    classifier = eligible[-1].name
    layers: dict[str, Layer] = {}
    for p in sparse:
        if ks[p.name] == p.fan_in:
            continue
        budget = ks[p.name] * p.out_features
        layers[p.name] = Layer(
            p.name, p.param, budget / p.numel, budget, may_ablate(p), p.name == classifier
        )
    return layers


def _ablation_rule(
    eligible: list[SparseParam], no_ablation: Iterable[str], ablate_classifier: bool
) -> Callable[[SparseParam], bool]:
    """Whether SRigL may ablate a layer's neurons: not a ``no_ablation`` match (parameter or
    module name, each glob checked to match), and not the classifier unless allowed."""
    globs = list(no_ablation)
    check_globs(
        "no_ablation", globs, [p.name for p in eligible] + [p.module_name for p in eligible]
    )
    classifier = eligible[-1].name

    def may_ablate(p: SparseParam) -> bool:
        protected = matches_any(p.name, globs) or matches_any(p.module_name, globs)
        return not protected and (p.name != classifier or ablate_classifier)

    return may_ablate


def layer_fan_in(p: SparseParam, fan_in: int | tuple[tuple[str, int], ...]) -> int:
    """The fixed fan-in option's value for layer ``p``: the int, or the first glob matching
    its parameter or module name.

    Raises:
        SparsityConfigError: no glob matches the layer.
    """
    if isinstance(fan_in, int):
        return fan_in
    for glob, k in fan_in:
        if matches_any(p.name, [glob]) or matches_any(p.module_name, [glob]):
            return k
    raise SparsityConfigError(
        f"sparse layer {p.name!r} matches no fan_in glob {[g for g, _ in fan_in]}; allowed: a "
        f"glob for every sparse layer, or keep it dense with dense_layers=[{p.name!r}]"
    )


def fixed_fan_in_layers(
    eligible: list[SparseParam],
    forced: set[str],
    fan_in: int | tuple[tuple[str, int], ...] | None,
    n_m: tuple[int, int] | None,
    no_ablation: Iterable[str],
    ablate_classifier: bool,
) -> dict[str, Layer]:
    """The sparse layers under a fixed fan-in (``fan_in``) or N:M (``n_m``) constraint.

    Every eligible weight not in ``forced`` is sparse with k = its fan-in option (or
    fan_in_l * N / M) non-zeros per neuron and budget B = k * out; a k equal to the dense
    fan-in leaves the layer dense (left out).

    Raises:
        SparsityConfigError: a fan-in above the layer's, a layer not matched by any ``fan_in``
            glob or a glob matching no layer, a fan-in not a multiple of M (each names the
            layer and what is allowed).
    """
    may_ablate = _ablation_rule(eligible, no_ablation, ablate_classifier)
    if isinstance(fan_in, tuple):
        names = [p.name for p in eligible] + [p.module_name for p in eligible]
        check_globs("fan_in", [g for g, _ in fan_in], names)
    classifier = eligible[-1].name
    layers: dict[str, Layer] = {}
    for p in eligible:
        if p.name in forced:
            continue
        if n_m is not None:
            n, m = n_m
            if p.fan_in % m:
                raise SparsityConfigError(
                    f"layer {p.name!r} has fan-in {p.fan_in}, not a multiple of M = {m} "
                    f"(n_m={n_m}); allowed: fan-ins divisible by M, or keep it dense with "
                    f"dense_layers=[{p.name!r}]"
                )
            k = p.fan_in // m * n
        else:
            assert fan_in is not None
            k = layer_fan_in(p, fan_in)
            if k > p.fan_in:
                raise SparsityConfigError(
                    f"fan_in={k} is larger than layer {p.name!r}'s fan-in {p.fan_in} (shape "
                    f"{tuple(p.shape)}); allowed: 1 <= fan_in <= {p.fan_in}, or keep it dense "
                    f"with dense_layers=[{p.name!r}]"
                )
        if k == p.fan_in:
            continue
        budget = k * p.out_features
        layers[p.name] = Layer(
            p.name,
            p.param,
            budget / p.numel,
            budget,
            may_ablate(p),
            p.name == classifier,
            fixed_fan_in=k,
            n_m=n_m,
        )
    return layers
