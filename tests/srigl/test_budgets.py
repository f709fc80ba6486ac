"""Equal budgets: every sparse method holds the same non-zeros per layer at init (issue 22).

The shared allocation is the constant fan-in one (srigl/budgets.py): k_l >= 1 per neuron,
B_l = k_l * out_l for every method, the global count as close as the neuron granularity allows
to d * N. Under the old rule (B_l = floor(numel * d_l), SRigL k = floor(B_l / out)) SRigL held
fewer weights than RigL in most layers, and a layer with d_l * fan_in < 1 was refused for SRigL.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import srigl
from srigl.budgets import constant_fan_in_allocation
from srigl.errors import BudgetError
from srigl.masks import eligible_parameters

SPARSITIES = [0.5, 0.8, 0.9, 0.95, 0.99]
DISTRIBUTIONS = ["uniform", "er", "erk"]

#: (label, trainer name, options): every registered sparse trainer, and the report's variants
METHODS = [(n, n, {}) for n in srigl.trainer_names() if n != "dense"] + [
    ("rigl_sparse_init", "rigl", {"sparse_init": True}),
    ("srigl_no_ablation", "srigl", {"ablation": False}),
]


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 128), nn.Linear(128, 10))


def _cnn() -> nn.Module:
    """First conv 3->40 3x3: d * fan_in = 0.27 < 1 at 99% uniform (the old k = 0 refusal)."""
    return nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(40, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 4 * 4, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def _vit() -> nn.Module:
    timm = pytest.importorskip("timm")
    return timm.models.vision_transformer.VisionTransformer(
        img_size=32, patch_size=8, embed_dim=128, depth=2, num_heads=2, num_classes=10
    )


MODELS = {"mlp": _mlp, "cnn": _cnn, "vit": _vit}


def _build(model_fn, method: str, sparsity: float, distribution: str):
    _, name, options = next(m for m in METHODS if m[0] == method)
    torch.manual_seed(0)
    model = model_fn()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    options = {"distribution": distribution, "total_steps": 100, "delta_t": 10, **options}
    trainer = srigl.create_trainer(name, model, opt, sparsity=sparsity, **options)
    return model, trainer


@pytest.mark.parametrize("distribution", DISTRIBUTIONS)
@pytest.mark.parametrize("sparsity", SPARSITIES)
@pytest.mark.parametrize("model_name", sorted(MODELS))
def test_every_method_holds_the_same_nnz_per_layer_at_init(model_name, sparsity, distribution):
    per_method = {}
    for method, *_ in METHODS:
        model, trainer = _build(MODELS[model_name], method, sparsity, distribution)
        stats = trainer.stats()
        per_method[method] = ({n: i["nnz"] for n, i in stats["layers"].items()}, stats)
        trainer.close()
    reference, stats = per_method["rigl"]
    for method, (nnz, other) in per_method.items():
        assert nnz == reference, f"{method} holds {nnz}, rigl {reference}"
        assert other["global_density"] == stats["global_density"], method
    # SRigL's constant fan-in k_l >= 1 in every sparse layer, and B_l = k_l * out_l
    srigl_stats = per_method["srigl"][1]
    for name, info in srigl_stats["layers"].items():
        assert isinstance(info["fan_in"], int) and info["fan_in"] >= 1, name
        assert info["nnz"] == info["fan_in"] * info["n_active"], name
    # the global count is within one neuron-fan-in (the largest layer's neurons) of d * N
    eligible = eligible_parameters(model)
    total = sum(p.numel for p in eligible)
    outs = {p.name: p.out_features for p in eligible}
    slack = max(outs[n] for n in reference)
    assert abs(stats["global_density"] * total - (1 - sparsity) * total) <= slack


def test_srigl_runs_where_a_layer_ideal_fan_in_is_below_one():
    # 3->40 3x3 conv at 99% uniform: d * fan_in = 0.27, the old rule refused it (k = 0)
    model, trainer = _build(_cnn, "srigl", 0.99, "uniform")
    first = trainer.stats()["layers"]["0.weight"]
    assert first["fan_in"] == 1 and first["nnz"] == 40
    x = torch.randn(2, 3, 8, 8)
    model(x).sum().backward()
    trainer.optimizer.step()
    trainer.step()


def test_the_shared_allocation_is_not_the_old_floor_rule():
    # the old SRigL budget floor(floor(numel * d) / out) * out is below RigL's floor(numel * d)
    # on the ViT at 99% uniform; now both hold the same
    _, rigl = _build(_vit, "rigl", 0.99, "uniform")
    rigl_nnz = {n: i["nnz"] for n, i in rigl.stats()["layers"].items()}
    rigl.close()
    _, structured = _build(_vit, "srigl", 0.99, "uniform")
    srigl_nnz = {n: i["nnz"] for n, i in structured.stats()["layers"].items()}
    assert srigl_nnz == rigl_nnz
    old = {
        n: (int(layer.param.numel() * 0.01) // layer.out_features) * layer.out_features
        for n, layer in structured.layers.items()
    }
    assert sum(old.values()) < 0.9 * sum(srigl_nnz.values())


def test_allocation_raises_a_layer_below_one_to_one_and_takes_it_from_the_others():
    shapes = {"a": (40, 27), "b": (64, 360), "c": (10, 128)}
    densities = {"a": 0.01, "b": 0.01, "c": 0.01}
    k = constant_fan_in_allocation(shapes, densities, sparsity=0.99)
    assert k["a"] == 1
    target = sum(d * o * f for (o, f), d in zip(shapes.values(), densities.values()))
    nnz = sum(k[n] * shapes[n][0] for n in shapes)
    assert abs(nnz - target) <= max(o for o, _ in shapes.values()) / 2
    # the layer raised to k = 1 took 40 * (1 - 0.27) weights from the others
    assert k["b"] * 64 + k["c"] * 10 < 0.01 * (64 * 360 + 10 * 128)


def test_allocation_keeps_every_fan_in_between_one_and_the_dense_one():
    shapes = {"a": (8, 3), "b": (1000, 2), "c": (5, 400)}
    k = constant_fan_in_allocation(shapes, {"a": 0.9, "b": 0.6, "c": 0.05}, sparsity=0.5)
    assert all(1 <= k[n] <= shapes[n][1] for n in shapes)


def test_allocation_error_names_the_sparsity_and_the_largest_usable_one():
    shapes = {"a": (100, 10), "b": (10, 100)}
    with pytest.raises(BudgetError, match=r"sparsity=0\.995 .* sparsity <= 0\.945"):
        constant_fan_in_allocation(shapes, {"a": 0.005, "b": 0.005}, sparsity=0.995)


def test_trainer_refuses_a_sparsity_below_one_weight_per_neuron_before_any_mask():
    model = nn.Sequential(nn.Linear(10, 100), nn.Linear(100, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(BudgetError, match="at least 1 weight per neuron"):
        srigl.create_trainer("rigl", model, opt, sparsity=0.995, total_steps=10)


@pytest.mark.parametrize("model_name", ["mlp", "vit"])
def test_srigl_after_ablation_still_holds_every_layer_budget(model_name):
    # after ablating neurons SRigL keeps k' = floor(B / n_active) per neuron and spends the
    # remainder B - k' * n_active on as many neurons (k' + 1): the old floor rule lost up to
    # n_active - 1 weights per layer
    torch.manual_seed(0)
    model = MODELS[model_name]()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer(
        "srigl",
        model,
        opt,
        sparsity=0.9,
        distribution="uniform",
        total_steps=40,
        delta_t=2,
        gamma_sal=1.0,
        alpha=0.5,
    )
    budgets = {name: layer.budget for name, layer in trainer.layers.items()}
    shape = (8, 3, 32, 32) if model_name == "vit" else (8, 64)
    g = torch.Generator().manual_seed(1)
    remainders = 0
    for _ in range(12):
        model(torch.randn(*shape, generator=g)).square().mean().backward()
        opt.step()
        trainer.step()
        opt.zero_grad()
        for name, info in trainer.stats()["layers"].items():
            layer = trainer.layers[name]
            rows = trainer.masks[name].reshape(layer.out_features, -1).sum(1)
            kept = rows[rows > 0]
            k = layer.fan_in_for(int(kept.numel()))
            assert info["nnz"] == budgets[name], (name, info)
            assert int(kept.min()) >= k and int(kept.max()) <= k + 1, name
            remainders += int((kept == k + 1).sum())
    assert sum(i["n_ablated"] for i in trainer.stats()["layers"].values()) > 0
    assert remainders > 0  # the rule ran: some neuron held k' + 1
    # the masks pass the trainer's own invariants on load, and condense
    state = trainer.state_dict()
    trainer.load_state_dict(state)
    if model_name == "mlp":
        condensed = srigl.condense(model.eval(), trainer.masks, strict=True)
        x = torch.randn(5, 64, generator=g)
        with torch.no_grad():
            torch.testing.assert_close(condensed(x), model(x), rtol=1e-4, atol=1e-5)
