"""The trainer's view of one sparse layer, and the choice of the layers and their budgets.

``build_layers`` turns the sparse-eligible weights into :class:`Layer` records: which are kept
dense (options and the density distribution), each one's density and budget B_l, and whether
SRigL may ablate its neurons.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import Tensor, nn

from srigl.distributions import layer_densities
from srigl.errors import EmptyLayerError
from srigl.masks import SparseParam, check_globs, forced_dense_names, layer_budget, matches_any

#: what a trainer's rule returns for one layer: (kept, new_mask), both bool [out, F]
Kept = tuple[Tensor, Tensor]


@dataclass
class Layer:
    """A sparse layer as the trainer sees it.

    Attributes:
        name: unwrapped parameter name; param: the weight; density: its target density;
        budget: B_l = floor(numel * density); may_ablate: SRigL may switch its neurons off;
        is_classifier: the last eligible layer of the model.
    """

    name: str
    param: nn.Parameter
    density: float
    budget: int
    may_ablate: bool
    is_classifier: bool

    @property
    def out_features(self) -> int:
        """Number of neurons (rows)."""
        return int(self.param.shape[0])

    @property
    def fan_in(self) -> int:
        """Dense fan-in of a neuron: the product of every dim but the first."""
        return self.param[0].numel()


def build_layers(
    eligible: list[SparseParam],
    *,
    sparsity: float,
    distribution: str,
    constant_fan_in: bool,
    dense_layers: Iterable[str],
    no_ablation: Iterable[str],
    dense_first_layer: bool,
    dense_classifier: bool,
    ablate_classifier: bool,
    erk_power: float,
    sparse_attention: bool = True,
) -> dict[str, Layer]:
    """The sparse layers among ``eligible`` (in order), keyed by parameter name.

    Layers whose density is 1 (forced dense or by the distribution) are left out.

    Raises:
        ValueError: a ``no_ablation`` glob that matches nothing. EmptyLayerError: a layer
            whose budget (or fan-in, with ``constant_fan_in``) would be 0.
    """
    forced = forced_dense_names(
        eligible, dense_layers, dense_first_layer, dense_classifier, sparse_attention
    )
    shapes = {p.name: p.shape for p in eligible}
    kwargs = {} if distribution == "uniform" else {"power": erk_power}
    densities = layer_densities(distribution, shapes, 1.0 - sparsity, dense=forced, **kwargs)
    classifier = eligible[-1].name
    no_ablation = list(no_ablation)
    check_globs(
        "no_ablation",
        no_ablation,
        [p.name for p in eligible] + [p.module_name for p in eligible],
    )
    layers: dict[str, Layer] = {}
    for p in eligible:
        density = densities[p.name]
        if density >= 1.0:
            continue
        budget = layer_budget(p.numel, density)
        # like dense_layers, a glob may name the parameter or its module ("head")
        protected = matches_any(p.name, no_ablation) or matches_any(p.module_name, no_ablation)
        may_ablate = not protected and (p.name != classifier or ablate_classifier)
        layer = Layer(p.name, p.param, density, budget, may_ablate, p.name == classifier)
        per_neuron = budget // layer.out_features if constant_fan_in else budget
        if per_neuron == 0:
            what = "fan-in k = floor(B_l / out)" if constant_fan_in else "budget B_l"
            raise EmptyLayerError(
                f"layer {p.name!r} of shape {tuple(p.shape)} at density {density:.4g} gets "
                f"{what} = 0 (B_l = {budget}); allowed: at least 1 weight per neuron. "
                f"Keep it dense with dense_layers=[{p.name!r}], lower the sparsity, or use "
                "another distribution"
            )
        layers[p.name] = layer
    return layers
