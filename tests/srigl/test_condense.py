"""srigl.condense: a condensed copy computes the masked model's function, plain and structured."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn

import backends
import srigl
from srigl.condense import MaskMismatchError, condensable_linears, load_condensed
from srigl.condensed_attention import CondensedMultiheadAttention
from srigl.masks import random_fan_in_mask

CPU_BACKENDS = [n for n in backends.names() if backends.available(n, "cpu")[0]]
# Backends that store the constant fan-in form (they must reject other masks).
CONDENSED_BACKENDS = [
    n for n in CPU_BACKENDS if issubclass(backends.get(n), backends.condensed.CondensedLinear)
]


def fan_in_masks(
    model: nn.Module, density: float = 0.3, ablate: float = 0.25, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Constant fan-in masks for every Linear/Conv weight and attention in_proj_weight of
    ``model`` with a fraction ``ablate`` of the neurons (at least one) ablated."""
    gen = torch.Generator().manual_seed(seed)
    masks = {}
    for name, p in model.named_parameters():
        if p.dim() < 2 or not (name.endswith(".weight") or name.endswith("in_proj_weight")):
            continue
        if "norm" in name or "pos_embedding" in name or "cls_token" in name:
            continue
        out, fan_in = p.shape[0], p[0].numel()
        k = max(1, int(density * fan_in))
        n_off = max(1, int(ablate * out))
        active = torch.ones(out, dtype=torch.bool)
        active[torch.randperm(out, generator=gen)[:n_off]] = False
        masks[name] = random_fan_in_mask(tuple(p.shape), k, gen, active)
    return masks


def randomise_biases(model: nn.Module, seed: int = 1) -> None:
    """Give every bias visible values so ablated neurons emit non-trivial constants."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=gen))


def masked_copy(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    """The reference: a copy with every masked weight multiplied by its mask, in eval mode."""
    ref = copy.deepcopy(model).eval()
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)
    return ref


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        OrderedDict(
            fc1=nn.Linear(20, 48),
            act1=nn.ReLU(),
            drop=nn.Dropout(0.1),
            fc2=nn.Linear(48, 40),
            act2=nn.GELU(),
            fc3=nn.Linear(40, 10),
        )
    )


def tv_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        image_size=32,
        patch_size=8,
        num_layers=2,
        num_heads=2,
        hidden_dim=32,
        mlp_dim=64,
        num_classes=10,
    )


def timm_vit() -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=32,
        patch_size=8,
        depth=2,
        embed_dim=32,
        num_heads=2,
        num_classes=10,
    )


MODELS = {
    "mlp": (mlp, (5, 20)),
    "torchvision_vit": (tv_vit, (3, 3, 32, 32)),
    "timm_vit": (timm_vit, (3, 3, 32, 32)),
}


def assert_same_outputs(model, masks, small, input_shape, seed=2):
    x = torch.randn(input_shape, generator=torch.Generator().manual_seed(seed))
    ref = masked_copy(model, masks)
    with torch.no_grad():
        want, got = ref(x), small.eval()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_there_are_backends_to_test():
    assert "dense" in CPU_BACKENDS and CONDENSED_BACKENDS, backends.names()


@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("model_name", list(MODELS))
def test_condensed_model_gives_the_masked_models_outputs(model_name, backend, structured):
    build, input_shape = MODELS[model_name]
    model = build()
    randomise_biases(model)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend=backend, structured=structured)
    assert_same_outputs(model, masks, small, input_shape)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_condense_replaces_every_called_masked_linear_and_leaves_the_rest(model_name):
    build, _ = MODELS[model_name]
    model = build()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive")
    names = condensable_linears(model, masks)
    assert names, "every test model has condensable Linear layers"
    attention = [n for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    for name, mod in small.named_modules():
        if name in names:
            assert isinstance(mod, backends.get("naive")), name
        elif any(name.startswith(f"{a}.") for a in attention):
            continue  # replaced with its attention module
        elif isinstance(model.get_submodule(name), nn.Linear):
            assert type(mod) is type(model.get_submodule(name)), name
    for name in attention:
        assert f"{name}.out_proj" not in names  # attention reads its weight directly
        # the whole attention module is replaced; its projections are condensed layers
        assert isinstance(small.get_submodule(name), CondensedMultiheadAttention)
        assert isinstance(small.get_submodule(f"{name}.out_proj"), backends.get("naive"))


def test_condense_leaves_the_original_model_untouched():
    model = mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    srigl.condense(model, fan_in_masks(model), backend="naive", structured=True)
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in ("fc1", "fc2", "fc3"))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_linear_layers_without_a_mask_stay_dense_linear():
    model = mlp()
    masks = {k: v for k, v in fan_in_masks(model).items() if not k.startswith("fc3")}
    small = srigl.condense(model, masks, backend="naive")
    assert type(small.fc3) is nn.Linear
    assert isinstance(small.fc1, backends.get("naive"))
    assert_same_outputs(model, masks, small, (4, 20))


def test_structured_condense_removes_ablated_neurons_and_next_inputs():
    model = mlp()
    randomise_biases(model)
    masks = fan_in_masks(model, ablate=0.25)
    small = srigl.condense(model, masks, backend="naive", structured=True)
    n1 = int(masks["fc1.weight"].any(1).sum())
    n2 = int(masks["fc2.weight"].any(1).sum())
    assert n1 < 48 and n2 < 40
    assert (small.fc1.out_features, small.fc2.in_features) == (n1, n1)
    assert (small.fc2.out_features, small.fc3.in_features) == (n2, n2)
    assert small.fc3.out_features == 10  # the model's output keeps its width
    # The narrower next layers keep their constant fan-in (zero-valued padding entries).
    assert small.fc2.k == int(masks["fc2.weight"].sum(1).max())
    assert small.fc3.k == int(masks["fc3.weight"].sum(1).max())
    assert_same_outputs(model, masks, small, (6, 20))


def test_structured_condense_keeps_neurons_when_the_next_op_is_not_elementwise():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    randomise_biases(model)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive", structured=True)
    assert small[0].out_features == 16 and small[2].in_features == 16
    assert_same_outputs(model, masks, small, (3, 12))


def test_structured_condense_folds_ablated_neurons_without_bias():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16, bias=False), nn.Sigmoid(), nn.Linear(16, 4))
    masks = fan_in_masks(model, ablate=0.5)
    small = srigl.condense(model, masks, backend="naive", structured=True)
    assert small[0].out_features == 8  # sigmoid(0) = 0.5 folded into the next bias
    assert_same_outputs(model, masks, small, (3, 12))


@pytest.mark.parametrize("model_name", ["torchvision_vit", "timm_vit"])
def test_structured_condense_shrinks_vit_mlp_blocks(model_name):
    build, input_shape = MODELS[model_name]
    model = build()
    randomise_biases(model)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive", structured=True)
    fc1 = {
        "torchvision_vit": "encoder.layers.encoder_layer_0.mlp.0",
        "timm_vit": "blocks.0.mlp.fc1",
    }
    n_active = int(masks[f"{fc1[model_name]}.weight"].any(1).sum())
    assert n_active < model.get_submodule(fc1[model_name]).out_features
    assert small.get_submodule(fc1[model_name]).out_features == n_active
    assert_same_outputs(model, masks, small, input_shape)


@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_condensed_state_dict_round_trips_through_a_file(tmp_path, backend, structured):
    model = mlp()
    randomise_biases(model)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend=backend, structured=structured)
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    torch.manual_seed(123)
    skeleton = mlp().apply(lambda m: m.reset_parameters() if hasattr(m, "reset_parameters") else 0)
    again = load_condensed(skeleton, masks, path, backend=backend, structured=structured)
    assert_same_outputs(model, masks, again, (5, 20))


def test_load_condensed_names_a_foreign_file(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    model = mlp()
    with pytest.raises(ValueError, match="junk.pt"):
        load_condensed(model, fan_in_masks(model), path, backend="naive")


def test_masks_with_ddp_and_compile_prefixes_are_accepted():
    model = mlp()
    randomise_biases(model)
    masks = fan_in_masks(model)
    wrapped = {
        f"{prefix}{k}": v for (k, v), prefix in zip(masks.items(), ["module.", "_orig_mod.", ""])
    }
    small = srigl.condense(model, wrapped, backend="naive")
    assert isinstance(small.fc1, backends.get("naive"))
    assert_same_outputs(model, masks, small, (5, 20))


def test_unknown_backend_is_an_error_listing_the_known_ones():
    model = mlp()
    with pytest.raises(ValueError, match="no_such_backend.*naive"):
        srigl.condense(model, fan_in_masks(model), backend="no_such_backend")


@pytest.mark.parametrize("backend", CONDENSED_BACKENDS)
def test_non_constant_fan_in_mask_is_an_error_naming_the_layer(backend):
    model = mlp()
    masks = fan_in_masks(model)
    masks["fc2.weight"][0] = True  # one row with full fan-in
    with pytest.raises(ValueError, match="fc2.*not constant fan-in"):
        srigl.condense(model, masks, backend=backend, strict=True)


@pytest.mark.parametrize("backend", CONDENSED_BACKENDS)
def test_non_constant_fan_in_layer_stays_masked_dense_and_is_listed(backend):
    model = mlp()
    masks = fan_in_masks(model)
    masks["fc2.weight"][0] = True
    small = srigl.condense(model, masks, backend=backend)
    assert type(small.fc2) is nn.Linear and isinstance(small.fc1, backends.get(backend))
    assert "not constant fan-in" in small.condense_report.kept["fc2"]
    assert "fc2" not in small.condense_report.condensed
    assert_same_outputs(model, masks, small, (4, 20))


def test_mask_for_a_missing_parameter_is_an_error_naming_it():
    model = mlp()
    masks = fan_in_masks(model)
    masks["fc9.weight"] = masks["fc1.weight"]
    with pytest.raises(MaskMismatchError, match="fc9.weight"):
        srigl.condense(model, masks, backend="naive")


def test_mask_of_the_wrong_shape_is_an_error_naming_it():
    model = mlp()
    masks = fan_in_masks(model)
    masks["fc1.weight"] = masks["fc1.weight"][:, :5]
    with pytest.raises(MaskMismatchError, match=r"fc1.weight.*\(48, 5\)"):
        srigl.condense(model, masks, backend="naive")


@pytest.mark.skipif("srigl" not in srigl.trainer_names(), reason="srigl trainer not registered")
@pytest.mark.parametrize("structured", [False, True], ids=["plain", "structured"])
def test_srigl_trained_mlp_condenses_to_the_same_outputs(structured):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer(
        "srigl", model, opt, sparsity=0.8, total_steps=8, delta_t=2, gamma_sal=0.9
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):
        x = torch.randn(32, 20, generator=gen)
        y = torch.randint(0, 10, (32,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        trainer.step()
        opt.zero_grad()
    masks = {k: v.clone() for k, v in trainer.masks.items()}
    for backend in CPU_BACKENDS:
        small = srigl.condense(model, masks, backend=backend, structured=structured)
        assert_same_outputs(model, masks, small, (7, 20))


def test_structured_condense_leaves_a_linear_reused_in_two_slots_intact():
    # Sequential(l1, relu, l2, tanh, l1, head): l1 runs twice; narrowing it (or treating
    # l2 -> tanh -> head as a pair, which hides the second l1) would change the function.
    torch.manual_seed(0)
    l1, l2 = nn.Linear(8, 8), nn.Linear(8, 8)
    model = nn.Sequential(l1, nn.ReLU(), l2, nn.Tanh(), l1, nn.Linear(8, 3))
    randomise_biases(model)
    masks = fan_in_masks(model, ablate=0.5)
    small = srigl.condense(model, masks, backend="naive", structured=True)
    assert small[0] is small[4]  # one condensed module, still in both slots
    assert small[0].out_features == 8 and small[4].in_features == 8
    assert_same_outputs(model, masks, small, (5, 8))


def test_condense_replaces_every_slot_of_a_reused_linear():
    torch.manual_seed(0)
    l1 = nn.Linear(6, 6)
    model = nn.Sequential(l1, nn.ReLU(), l1)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive")
    assert not isinstance(small[2], nn.Linear) and small[0] is small[2]
    assert_same_outputs(model, masks, small, (4, 6))


class TiedHead(nn.Module):
    """An embedding whose weight is also the (Linear) output head's weight."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 16)
        self.fc = nn.Linear(16, 16)
        self.head = nn.Linear(16, 20, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(self.embed(x).mean(1))))


@pytest.mark.skipif("srigl" not in srigl.trainer_names(), reason="srigl trainer not registered")
def test_condense_accepts_the_trainers_mask_of_a_tied_weight():
    # The trainer names the tied weight after its Linear owner ('head.weight'), a name that
    # named_parameters() hides behind the embedding; condense must accept it.
    torch.manual_seed(0)
    model = TiedHead()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = srigl.create_trainer("srigl", model, opt, sparsity=0.5, total_steps=10)
    assert "head.weight" in trainer.masks
    small = srigl.condense(model, trainer.masks, backend="naive")
    assert not isinstance(small.head, nn.Linear)
    x = torch.randint(0, 20, (4, 5))
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), model.eval()(x), rtol=1e-4, atol=1e-5)


def test_condensing_a_condensed_model_is_an_error_saying_so():
    model = mlp()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive")
    with pytest.raises(MaskMismatchError, match=r"'fc1' is already condensed"):
        srigl.condense(small, masks, backend="naive")


class _OwnModule(nn.Module):
    """A user model whose first layer is an attribute literally called ``module``."""

    def __init__(self) -> None:
        super().__init__()
        self.module = nn.Linear(20, 16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.module(x)))


def test_a_submodule_named_module_gets_a_trainer_trains_and_condenses():
    torch.manual_seed(0)
    model = _OwnModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with srigl.create_trainer("srigl", model, opt, sparsity=0.5, total_steps=4, delta_t=1) as t:
        assert set(t.masks) == {"module.weight", "head.weight"}
        nn.functional.cross_entropy(model(torch.randn(8, 20)), torch.arange(8)).backward()
        opt.step()
        assert t.step()  # a topology update at step 1
        masks = {k: v.clone() for k, v in t.masks.items()}
    small = srigl.condense(model.eval(), masks, backend="naive")
    assert isinstance(small.module, backends.get("naive"))
    assert_same_outputs(model, masks, small, (5, 20))


def test_a_wrapper_prefix_is_removed_only_where_the_model_is_wrapped():
    from srigl.condense import unwrap_name

    model = _OwnModule()
    wrapped = nn.DataParallel(model)  # on CPU it calls the module as it is
    assert unwrap_name("module.weight", model) == "module.weight"
    assert unwrap_name("module.module.weight", wrapped) == "module.weight"
    assert unwrap_name("module.head.weight", wrapped) == "head.weight"
    masks = fan_in_masks(model)
    small = srigl.condense(wrapped.eval(), {f"module.{k}": v for k, v in masks.items()}, "naive")
    assert isinstance(small.module, backends.get("naive"))
    assert_same_outputs(model, masks, small, (5, 20))


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod."])
def test_condensable_linears_accepts_masks_saved_from_a_wrapped_model(prefix):
    """Masks keyed as DDP (``module.``) or torch.compile (``_orig_mod.``) saved them name the
    same layers as the bare keys."""
    build, _ = MODELS[next(iter(MODELS))]
    model = build()
    masks = fan_in_masks(model)
    wrapped_keys = {prefix + name: mask for name, mask in masks.items()}
    assert condensable_linears(model, wrapped_keys) == condensable_linears(model, masks)
    assert condensable_linears(model, masks)
