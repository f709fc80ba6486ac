"""Layer-wise densities: uniform, ER, ERK, forced-dense layers and the budget."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backends.registry import UnknownNameError
from srigl.distributions import distribution_names, layer_densities
from srigl.errors import BudgetError

SHAPES = {
    "conv1": (16, 3, 3, 3),
    "conv2": (32, 16, 3, 3),
    "dw": (32, 1, 3, 3),
    "fc1": (128, 512),
    "fc2": (10, 128),
}


def _realised(shapes, densities):
    return sum(densities[n] * math.prod(s) for n, s in shapes.items())


def test_distribution_registry_lists_uniform_er_erk():
    assert distribution_names() == ["er", "erk", "uniform"]


def test_unknown_distribution_names_the_value_and_the_known_ones():
    with pytest.raises(UnknownNameError, match=r"'gaussian'.*er, erk, uniform"):
        layer_densities("gaussian", SHAPES, 0.1)
    assert issubclass(UnknownNameError, ValueError)


layer_shape = st.one_of(
    st.tuples(st.integers(1, 64), st.integers(1, 64)),
    st.tuples(st.integers(1, 32), st.integers(1, 16), st.integers(1, 5), st.integers(1, 5)),
)


@settings(max_examples=40, deadline=None)
@given(
    shapes=st.lists(layer_shape, min_size=1, max_size=6),
    density=st.floats(0.01, 0.99),
    name=st.sampled_from(["uniform", "er", "erk"]),
    n_dense=st.integers(0, 2),
)
def test_layer_densities_add_up_to_the_global_budget(shapes, density, name, n_dense):
    named = {f"l{i}": s for i, s in enumerate(shapes)}
    dense = list(named)[:n_dense] if n_dense < len(named) else []
    total = sum(math.prod(s) for s in named.values())
    forced = sum(math.prod(named[n]) for n in dense)
    if forced >= density * total:
        with pytest.raises(BudgetError):
            layer_densities(name, named, density, dense=dense)
        return
    d = layer_densities(name, named, density, dense=dense)
    assert set(d) == set(named)
    assert all(0.0 < v <= 1.0 for v in d.values())
    assert all(d[n] == 1.0 for n in dense)
    assert _realised(named, d) == pytest.approx(density * total, rel=1e-9)


def test_uniform_gives_every_sparse_layer_the_same_density():
    d = layer_densities("uniform", SHAPES, 0.2, dense=["conv1"])
    sparse = {v for n, v in d.items() if n != "conv1"}
    assert len(sparse) == 1 and d["conv1"] == 1.0


def test_erk_density_is_proportional_to_sum_over_product_of_dims():
    d = layer_densities("erk", SHAPES, 0.1)
    sparse = [n for n in SHAPES if d[n] < 1.0]
    ratios = {n: d[n] / (sum(SHAPES[n]) / math.prod(SHAPES[n])) for n in sparse}
    eps = next(iter(ratios.values()))
    assert all(r == pytest.approx(eps) for r in ratios.values())
    # the depthwise conv (raw > 1/eps) is made dense and eps solved again
    assert d["dw"] == 1.0


def test_er_leaves_kernel_dims_out():
    d = layer_densities("er", {"a": (8, 4, 3, 3), "b": (8, 4)}, 0.3)
    assert d["a"] == pytest.approx(d["b"])


def test_budget_below_forced_dense_layers_is_an_error_naming_them():
    with pytest.raises(BudgetError, match=r"fc1"):
        layer_densities("erk", SHAPES, 0.05, dense=["fc1"])


def test_forcing_every_layer_dense_below_full_density_is_a_budget_error():
    # d * N = 0.5 * 32 cannot be met when both layers must stay dense (they need all 32)
    shapes = {"fc1": (4, 4), "fc2": (4, 4)}
    for name in ("uniform", "er", "erk"):
        with pytest.raises(BudgetError, match=r"fc1.*fc2"):
            layer_densities(name, shapes, 0.5, dense=["fc1", "fc2"])
