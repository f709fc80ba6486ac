"""Every trainer through the public API: invariants after init and after every update."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_checks import assert_invariants, toy_mlp, train_steps
from torch import nn

import srigl
from srigl.trainers.base import SparseTrainer

SPARSE = [n for n in srigl.trainer_names() if n != "dense"]
DYNAMIC = [n for n in SPARSE if srigl.TRAINERS.get(n).dynamic]


def make(name, model=None, opt_cls=torch.optim.SGD, opt_kwargs=None, **kwargs):
    model = model if model is not None else toy_mlp()
    opt_kwargs = opt_kwargs if opt_kwargs is not None else {"lr": 0.1, "momentum": 0.9}
    optimizer = opt_cls(model.parameters(), **opt_kwargs)
    args = {"sparsity": 0.8, "total_steps": 40, "delta_t": 4, "alpha": 0.5, **kwargs}
    return model, optimizer, srigl.create_trainer(name, model, optimizer, **args)


def test_trainer_names_are_the_five_methods_sorted():
    assert srigl.trainer_names() == ["dense", "rigl", "set", "srigl", "static"]


def test_every_registered_trainer_is_a_sparse_trainer():
    for name in srigl.trainer_names():
        assert issubclass(srigl.TRAINERS.get(name), SparseTrainer)


def test_dense_trainer_has_no_masks_and_full_density():
    model, opt, trainer = make("dense")
    assert trainer.masks == {}
    for _ in train_steps(model, opt, trainer, 5, (20,), 10):
        pass
    stats = trainer.stats()
    assert stats["global_density"] == 1.0 and stats["step"] == 5 and stats["layers"] == {}


@pytest.mark.parametrize(
    ("name", "fan_in"),
    # srigl is constant fan-in by definition (fan_in=False is refused: see test_bad_inputs)
    [(n, f) for n in SPARSE for f in (None, True, False) if not (n == "srigl" and f is False)],
)
def test_invariants_hold_after_init_and_after_every_update(name, fan_in):
    model, opt, trainer = make(name, constant_fan_in=fan_in)
    assert trainer.constant_fan_in == (fan_in if fan_in is not None else name == "srigl")
    assert_invariants(trainer)
    updates = 0
    for updated in train_steps(model, opt, trainer, 30, (20,), 10):
        updates += updated
        assert_invariants(trainer)
    assert updates == (7 if trainer.dynamic else 0) == trainer.stats()["updates"]


model_kind = st.sampled_from(["mlp", "cnn"])


def _model(kind: str, width: int, seed: int) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(seed)
    if kind == "mlp":
        return toy_mlp((12, width, width // 2 + 2, 10), seed), (12,)
    model = nn.Sequential(
        nn.Conv2d(3, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1, groups=width),
        nn.Conv2d(width, 2 * width, 1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, 10),
    )
    return model, (3, 6, 6)


@settings(max_examples=25, deadline=None)
@given(
    name=st.sampled_from(DYNAMIC),
    kind=model_kind,
    width=st.integers(8, 24),
    sparsity=st.floats(0.5, 0.95),
    distribution=st.sampled_from(["uniform", "er", "erk"]),
    seed=st.integers(0, 10_000),
)
def test_property_invariants_over_random_models_sparsities_and_seeds(
    name, kind, width, sparsity, distribution, seed
):
    model, shape = _model(kind, width, seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    try:
        trainer = srigl.create_trainer(
            name, model, opt, sparsity=sparsity, distribution=distribution,
            total_steps=16, delta_t=3, alpha=0.5, gamma_sal=0.5, seed=seed,
        )  # fmt: skip
    except srigl.errors.BudgetError:
        return  # a legitimate refusal (under 1 weight per neuron) is tested on its own
    budgets = {n: layer.budget for n, layer in trainer.layers.items()}
    total = sum(p.numel for p in srigl.masks.eligible_parameters(model))
    realised = sum(layer.budget for layer in trainer.layers.values())
    dense = total - sum(layer.param.numel() for layer in trainer.layers.values())
    # the shared constant fan-in allocation: B_l = k_l * out_l, within the largest layer's
    # neuron count of d * N (srigl/budgets.py)
    slack = max((layer.out_features for layer in trainer.layers.values()), default=0)
    assert abs(realised + dense - (1 - sparsity) * total) <= slack
    assert all(layer.budget % layer.out_features == 0 for layer in trainer.layers.values())
    assert_invariants(trainer)
    for _ in train_steps(model, opt, trainer, 12, shape, 10, seed=seed):
        assert_invariants(trainer)
        assert {n: layer.budget for n, layer in trainer.layers.items()} == budgets
    assert trainer.stats()["updates"] == 3


@pytest.mark.parametrize("name", ["srigl", "rigl", "set"])
@pytest.mark.parametrize(
    ("opt_cls", "opt_kwargs"),
    [
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}),
        (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
        (torch.optim.Adam, {"lr": 1e-2}),
        (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.3, "amsgrad": True}),
        (torch.optim.RMSprop, {"lr": 1e-3, "momentum": 0.9, "centered": True}),
    ],
    ids=["sgd-momentum-wd", "sgd-nesterov", "adam", "adamw-amsgrad", "rmsprop-centered"],
)
def test_optimizer_state_is_exactly_zero_at_masked_positions(name, opt_cls, opt_kwargs):
    model, opt, trainer = make(name, opt_cls=opt_cls, opt_kwargs=opt_kwargs)
    seen_states = set()
    for _ in train_steps(model, opt, trainer, 13, (20,), 10):
        assert_invariants(trainer)
        for layer in trainer.layers.values():
            seen_states |= {k for k, v in opt.state[layer.param].items() if torch.is_tensor(v)}
    # the optimizer really had weight-shaped state to mask
    assert seen_states - {"step"}


def test_rigl_keeps_each_layers_nnz_constant_across_updates():
    model, opt, trainer = make("rigl")
    before = {n: int(m.sum()) for n, m in trainer.masks.items()}
    changed = False
    prev = {n: m.clone() for n, m in trainer.masks.items()}
    for updated in train_steps(model, opt, trainer, 20, (20,), 10):
        if updated:
            changed |= any(not torch.equal(prev[n], m) for n, m in trainer.masks.items())
        else:
            assert all(torch.equal(prev[n], m) for n, m in trainer.masks.items())
        assert {n: int(m.sum()) for n, m in trainer.masks.items()} == before
        prev = {n: m.clone() for n, m in trainer.masks.items()}
    assert changed, "RigL never changed the topology"


@pytest.mark.parametrize("name", DYNAMIC)
def test_newly_grown_weights_start_at_zero(name):
    model, opt, trainer = make(name)
    prev = {n: m.clone() for n, m in trainer.masks.items()}
    grown_total = 0
    for updated in train_steps(model, opt, trainer, 20, (20,), 10):
        if updated:
            for n, mask in trainer.masks.items():
                grown = mask & ~prev[n]
                grown_total += int(grown.sum())
                assert torch.count_nonzero(trainer.layers[n].param.detach()[grown]) == 0
        prev = {n: m.clone() for n, m in trainer.masks.items()}
    assert grown_total > 0


@pytest.mark.parametrize("name", DYNAMIC)
def test_updates_happen_at_multiples_of_delta_t_before_t_end_with_cosine_drop(name):
    model, opt, trainer = make(name, total_steps=40, delta_t=4, t_end_fraction=0.5, alpha=0.3)
    steps = []
    for i, updated in enumerate(train_steps(model, opt, trainer, 40, (20,), 10), start=1):
        assert trainer.is_update_step(i) == updated
        if updated:
            steps.append(i)
    assert steps == [4, 8, 12, 16] == [h["step"] for h in trainer.history]
    for h in trainer.history:
        assert h["drop_fraction"] == pytest.approx(0.15 * (1 + math.cos(math.pi * h["step"] / 20)))
        assert h["n_ablated"] == sum(v["n_ablated"] for v in h["layers"].values())


def test_srigl_sparse_init_uses_he_std_on_the_sparse_fan_in():
    model = nn.Sequential(nn.Linear(1000, 400), nn.ReLU(), nn.Linear(400, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer("srigl", model, opt, sparsity=0.9, distribution="uniform",
                                   total_steps=10)  # fmt: skip
    w = model[0].weight.detach()
    k = trainer.stats()["layers"]["0.weight"]["fan_in"]
    assert k == 100
    assert w[trainer.masks["0.weight"]].std().item() == pytest.approx(math.sqrt(2 / k), rel=0.03)


def test_rigl_keeps_the_original_weights_without_sparse_init():
    model = toy_mlp()
    original = model[0].weight.detach().clone()
    _, _, trainer = make("rigl", model=model)
    mask = trainer.masks["0.weight"]
    assert torch.equal(model[0].weight.detach(), original * mask)


def test_srigl_never_ablates_the_classifier_unless_asked():
    for ablate_classifier in (False, True):
        model, opt, trainer = make(
            "srigl", model=toy_mlp((20, 64, 40)), gamma_sal=1.0, sparsity=0.9,
            distribution="uniform", ablate_classifier=ablate_classifier,
        )  # fmt: skip
        ablated = 0
        for _ in train_steps(model, opt, trainer, 20, (20,), 40):
            ablated += trainer.stats()["layers"]["2.weight"]["n_ablated"]
        assert (ablated > 0) == ablate_classifier


def test_no_ablation_globs_protect_layers_and_ablation_false_disables_it():
    for kwargs, protected in (({"no_ablation": ["0.*"]}, "0.weight"), ({"ablation": False}, "")):
        model, opt, trainer = make("srigl", gamma_sal=1.0, sparsity=0.9, **kwargs)
        for _ in train_steps(model, opt, trainer, 20, (20,), 10):
            for name, info in trainer.stats()["layers"].items():
                if name == protected or not protected:
                    assert info["n_ablated"] == 0


def test_no_ablation_globs_match_module_names_like_dense_layers():
    # dense_layers=["0"] keeps module 0 dense; no_ablation=["0"] must protect it the same way
    # instead of silently matching nothing
    _, _, trainer = make("srigl", gamma_sal=1.0, sparsity=0.9, no_ablation=["0"])
    assert not trainer.layers["0.weight"].may_ablate and trainer.layers["2.weight"].may_ablate


def test_srigl_ablation_happens_and_preserves_the_budget():
    model, opt, trainer = make("srigl", model=toy_mlp((20, 128, 10)), gamma_sal=1.0, sparsity=0.9)
    for _ in train_steps(model, opt, trainer, 20, (20,), 10):
        assert_invariants(trainer)
    info = trainer.stats()["layers"]["0.weight"]
    assert info["n_ablated"] > 0
    budget = trainer.layers["0.weight"].budget
    assert info["nnz"] == budget  # k' = floor(B / n_active), the remainder on some neurons
    assert math.floor(info["fan_in"]) == budget // info["n_active"]


def test_srigl_update_ablates_a_neuron_whose_only_salience_is_gradient_outside_the_union():
    # SPEC.md section 2: the salient set is the union of the top n_keep |W| and the top n_drop
    # |grad| over the whole layer. Here row 0's large weights also carry the largest grads, so
    # the grad set adds nothing and row 2 (small weights, grads only at inactive positions)
    # falls below tau = 1 and is ablated; its budget goes to rows 0 and 1 (k' = 6 // 2 = 3).
    from srigl.trainers.base import Layer

    _, _, trainer = make("srigl", gamma_sal=0.5)
    weight = torch.tensor([[5.0, 4.0, 0, 0], [3.0, 2.5, 0, 0], [0.1, 0.2, 0, 0]])
    mask = weight != 0
    grad = torch.tensor([[9.0, 8.0, 0, 0], [0, 0, 0, 0], [0, 0, 1.0, 0.5]])
    layer = Layer("w", nn.Parameter(weight.clone()), 0.5, 6, True, False)
    kept, new_mask = trainer.update_layer(layer, weight, mask, grad, f=0.34)
    assert new_mask.sum(1).tolist() == [3, 3, 0]
    assert kept[2].sum() == 0


def test_sparse_attention_false_counts_attention_as_forced_dense_inside_the_budget():
    # SPEC.md section 1: a forced-dense layer spends its full size from d*N, N counting it
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(16, 2)
            self.fc1 = nn.Linear(16, 64)
            self.fc2 = nn.Linear(64, 10)

    model = Block()
    _, _, trainer = make(
        "rigl", model=model, sparsity=0.5, distribution="uniform", sparse_attention=False
    )
    assert set(trainer.masks) == {"fc1.weight", "fc2.weight"}
    attention = model.attn.in_proj_weight.numel() + model.attn.out_proj.weight.numel()
    n_all = attention + model.fc1.weight.numel() + model.fc2.weight.numel()
    nnz = sum(int(m.sum()) for m in trainer.masks.values()) + attention
    # within the largest sparse layer's neuron count (64) of d * N: the shared constant fan-in
    # allocation is neuron-granular (srigl/budgets.py)
    assert abs(nnz - n_all * 0.5) <= 64
    assert trainer.stats()["global_density"] == pytest.approx(0.5, abs=64 / n_all)


@pytest.mark.parametrize("name", SPARSE)
def test_depthwise_and_grouped_convs_keep_constant_per_row_fan_in(name):
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.Conv2d(16, 16, 3, padding=1, groups=16),
        nn.Conv2d(16, 32, 3, padding=1, groups=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 10),
    )
    model, opt, trainer = make(name, model=model, constant_fan_in=True, sparsity=0.6,
                               distribution="uniform")  # fmt: skip
    assert trainer.masks["1.weight"].shape == (16, 1, 3, 3)
    for _ in train_steps(model, opt, trainer, 10, (3, 5, 5), 10):
        assert_invariants(trainer)
    layers = trainer.stats()["layers"]
    assert layers["1.weight"]["fan_in"] <= 9 and layers["2.weight"]["fan_in"] <= 36


def test_vision_transformer_attention_projections_are_sparse():
    from torchvision.models import VisionTransformer

    torch.manual_seed(0)
    vit = VisionTransformer(image_size=8, patch_size=4, num_layers=2, num_heads=2,
                            hidden_dim=16, mlp_dim=32, num_classes=10)  # fmt: skip
    model, opt, trainer = make("srigl", model=vit, opt_cls=torch.optim.AdamW,
                               opt_kwargs={"lr": 1e-3}, gamma_sal=0.95, sparsity=0.5,
                               distribution="uniform")  # fmt: skip
    key = "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"
    assert key in trainer.masks and trainer.masks[key].shape == (48, 16)
    assert "conv_proj.weight" in trainer.masks and "heads.head.weight" in trainer.masks
    for _ in train_steps(model, opt, trainer, 9, (3, 8, 8), 10):
        assert_invariants(trainer)
    assert trainer.stats()["updates"] == 2


def test_masks_are_keyed_by_unwrapped_names_under_data_parallel():
    plain = make("srigl")[2]
    model = toy_mlp()
    wrapped = nn.DataParallel(model)
    opt = torch.optim.SGD(wrapped.parameters(), lr=0.1)
    trainer = srigl.create_trainer("srigl", wrapped, opt, sparsity=0.8, total_steps=40)
    assert list(trainer.masks) == list(plain.masks) == ["0.weight", "2.weight", "4.weight"]


def test_ddp_wrapped_model_masks_have_no_module_prefix(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(toy_mlp())
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = srigl.create_trainer("rigl", model, opt, sparsity=0.8, total_steps=20,
                                       delta_t=2)  # fmt: skip
        assert list(trainer.masks) == ["0.weight", "2.weight", "4.weight"]
        for _ in train_steps(model, opt, trainer, 4, (20,), 10):
            assert_invariants(trainer)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", DYNAMIC)
def test_gradients_of_the_last_n_steps_before_an_update_are_averaged(name):
    model = toy_mlp()
    captured = []
    model[0].weight.register_hook(lambda g: captured.append(g.detach().clone()))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer(name, model, opt, sparsity=0.8, total_steps=100, delta_t=5,
                                   grad_accumulation_n=3)  # fmt: skip
    steps = train_steps(model, opt, trainer, 4, (20,), 10)
    for _ in steps:
        pass
    acc = trainer.state_dict()["accumulators"]
    if not trainer.needs_dense_grad:
        assert acc == {}
        return
    expected = (captured[2] + captured[3]) / 3
    torch.testing.assert_close(acc["0.weight"], expected)


@pytest.mark.parametrize("name", SPARSE)
def test_state_dict_round_trip_resumes_bitwise(name, tmp_path):
    def build():
        model = toy_mlp(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        trainer = srigl.create_trainer(name, model, opt, sparsity=0.8, total_steps=40, delta_t=4,
                                       grad_accumulation_n=3, seed=7)  # fmt: skip
        return model, opt, trainer

    def run(model, opt, trainer, start, stop):
        gen = torch.Generator().manual_seed(100)
        data = [(torch.randn(16, 20, generator=gen), torch.randint(0, 10, (16,), generator=gen))
                for _ in range(stop)]  # fmt: skip
        for x, y in data[start:stop]:
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            trainer.step()
            opt.zero_grad()

    full = build()
    run(*full, 0, 22)

    first = build()
    run(*first, 0, 11)  # stops inside an accumulation window (steps 10-12)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": first[0].state_dict(), "optimizer": first[1].state_dict(),
                "trainer": first[2].state_dict()}, path)  # fmt: skip
    ckpt = torch.load(path, weights_only=True)
    resumed = build()
    resumed[0].load_state_dict(ckpt["model"])
    resumed[1].load_state_dict(ckpt["optimizer"])
    resumed[2].load_state_dict(ckpt["trainer"])
    run(*resumed, 11, 22)

    for n in full[2].masks:
        assert torch.equal(full[2].masks[n], resumed[2].masks[n])
    for (n, a), b in zip(full[0].state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(a, b), n
    assert full[2].history == resumed[2].history and full[2].stats() == resumed[2].stats()


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)], ids=["cpu", "cuda"]
)
def test_state_dict_loaded_onto_the_models_device_restores_a_fresh_trainer(device, tmp_path):
    # A checkpoint read with map_location=<the model's device> carries the generator state on
    # that device; the fresh trainer must still accept it and continue like the original.
    def build():
        model = toy_mlp(seed=3).to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, opt, srigl.create_trainer("set", model, opt, sparsity=0.8,
                                                total_steps=40, delta_t=2, seed=5)  # fmt: skip

    model, opt, trainer = build()
    for _ in train_steps(model, opt, trainer, 3, (20,), 10):
        pass
    torch.save({"m": model.state_dict(), "o": opt.state_dict(), "t": trainer.state_dict()},
               tmp_path / "c.pt")  # fmt: skip
    ckpt = torch.load(tmp_path / "c.pt", map_location=device, weights_only=True)
    fresh = build()
    fresh[0].load_state_dict(ckpt["m"])
    fresh[1].load_state_dict(ckpt["o"])
    fresh[2].load_state_dict(ckpt["t"])
    assert torch.equal(fresh[2].generator.get_state(), trainer.generator.get_state())
    assert all(torch.equal(trainer.masks[n], fresh[2].masks[n]) for n in trainer.masks)


def test_loading_another_trainers_state_is_refused():
    sd = make("rigl")[2].state_dict()
    with pytest.raises(ValueError, match=r"'rigl'.*'set'"):
        make("set")[2].load_state_dict(sd)


def test_set_regrowth_depends_only_on_the_seed():
    def masks(seed):
        model, opt, trainer = make("set", seed=seed)
        for _ in train_steps(model, opt, trainer, 8, (20,), 10):
            pass
        return trainer.masks

    a, b, c = masks(1), masks(1), masks(2)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_step_returns_whether_the_topology_changed_and_stats_count_updates():
    model, opt, trainer = make("srigl", total_steps=20, delta_t=5)
    flags = list(train_steps(model, opt, trainer, 20, (20,), 10))
    assert [i for i, f in enumerate(flags, start=1) if f] == [5, 10]
    stats = trainer.stats()
    assert stats["step"] == 20 and stats["updates"] == 2
    total = sum(p.numel for p in srigl.masks.eligible_parameters(model))
    budget = sum(layer.budget for layer in trainer.layers.values())
    n_active = sum(info["n_active"] for info in stats["layers"].values())
    slack = max(layer.out_features for layer in trainer.layers.values()) / total
    assert (budget - n_active) / total < stats["global_density"] <= budget / total <= 0.2 + slack


def test_masks_of_a_compiled_model_have_no_orig_mod_prefix():
    model = toy_mlp()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(compiled.parameters(), lr=0.1)
    trainer = srigl.create_trainer("srigl", compiled, opt, sparsity=0.8, total_steps=40)
    assert list(trainer.masks) == ["0.weight", "2.weight", "4.weight"]
    assert trainer.layers["0.weight"].param is model[0].weight
