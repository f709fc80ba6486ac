"""srigl.condense on CNNs and attention: condensed convolutions, BatchNorm folding, structured
channel removal, condensed nn.MultiheadAttention, save/load."""

from __future__ import annotations

import pytest
import torch
from test_condense import fan_in_masks, masked_copy, randomise_biases
from torch import nn

import backends
import srigl
from backends.conv import ConvBackend
from srigl.condense import load_condensed
from srigl.condense_conv import fold_batchnorm
from srigl.condensed_attention import CondensedMultiheadAttention

# quick CPU backends for whole models (compiled: one compile per layer shape, too slow here)
MODEL_BACKENDS = [
    n
    for n in ("fused", "naive", "csr", "coo", "dense", "structured")
    if backends.supports(n, "cpu", torch.float32, op="conv2d")[0]
]


def randomise_bn(model: nn.Module, seed: int = 3) -> nn.Module:
    """Running statistics and affine parameters far from the identity (so folding matters)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    return model


def tv_resnet18() -> nn.Module:
    from torchvision.models import resnet18

    torch.manual_seed(0)
    return resnet18(num_classes=10)


def tv_mobilenet_v3_small() -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    torch.manual_seed(0)
    return mobilenet_v3_small(num_classes=10)


def timm_efficientnet() -> nn.Module:
    """A timm CNN with BatchNormAct2d, depthwise convs, squeeze-excite and 'same' padding."""
    import timm

    torch.manual_seed(0)
    return timm.create_model("efficientnet_b0", pretrained=False, num_classes=10)


CNNS = {
    "tv_resnet18": tv_resnet18,
    "tv_mobilenet_v3_small": tv_mobilenet_v3_small,
    "timm_efficientnet_b0": timm_efficientnet,
}


def prepared(build) -> nn.Module:
    model = build()
    randomise_biases(model)
    return randomise_bn(model).eval()


def assert_close_outputs(ref: nn.Module, small: nn.Module, shape=(2, 3, 32, 32), seed=5):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        want, got = ref.eval()(x), small.eval()(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def _cnn_cases():
    """Every quick backend on resnet18 (plain); structured with fused/naive/dense; the other
    CNNs with fused (plain and structured), naive and dense (plain)."""
    for backend in MODEL_BACKENDS:
        yield "tv_resnet18", backend, False
        if backend in ("fused", "naive", "dense"):
            yield "tv_resnet18", backend, True
    for model in ("tv_mobilenet_v3_small", "timm_efficientnet_b0"):
        for backend, structured in (("fused", False), ("fused", True), ("naive", False)):
            if backend in MODEL_BACKENDS:
                yield model, backend, structured
    yield "tv_mobilenet_v3_small", "dense", False


@pytest.mark.parametrize("model_name,backend,structured", list(_cnn_cases()))
def test_condensed_cnn_equals_the_masked_dense_eval_model(model_name, backend, structured):
    model = prepared(CNNS[model_name])
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend=backend, structured=structured)
    report = small.condense_report
    assert report.traced and not report.kept, report.kept
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert all(isinstance(small.get_submodule(n), ConvBackend) for n in convs)
    assert len(report.folded) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in small.modules())
    if structured and model_name != "timm_efficientnet_b0":
        assert report.removed, "ablated channels feeding a 1x1 conv are removed"
    assert_close_outputs(masked_copy(model, masks), small)


def test_batchnorm_folding_is_exact_and_needs_eval_mode():
    model = prepared(tv_resnet18)
    folded = fold_batchnorm(model)
    assert len(folded.condense_report.folded) == 20
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    # in training mode BN normalises with batch statistics: nothing may be folded
    assert fold_batchnorm(model.train()).condense_report.folded == []
    small = srigl.condense(model.train(), fan_in_masks(model), backend="naive")
    assert small.condense_report.folded == []


def test_fold_bn_false_keeps_the_batchnorms():
    model = prepared(tv_resnet18)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive", fold_bn=False)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in small.modules()) == 20
    assert_close_outputs(masked_copy(model, masks), small)


class Untraceable(nn.Module):
    """Data-dependent control flow: no fx graph; BN folding falls back to Sequential order."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        if bool(y.sum() > 0):
            y = y * 2
        return self.head(y)


def test_untraceable_model_folds_batchnorm_from_sequential_order():
    model = randomise_bn(Untraceable()).eval()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="fused", structured=True)
    assert not small.condense_report.traced
    assert small.condense_report.folded == [("body.0", "body.1")]
    assert small.condense_report.removed == {}  # structured removal needs the graph
    assert_close_outputs(masked_copy(model, masks), small, (2, 3, 9, 7))


def chain(next_kernel: int, padding: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(4, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 6, next_kernel, padding=padding),
    )


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["positive_bias", "negative_bias"])
def test_structured_conv_removes_ablated_channels_only_where_exact(sign):
    for next_kernel, padding in ((1, 0), (3, 1)):
        model = chain(next_kernel, padding)
        masks = fan_in_masks(model, ablate=0.5)
        ablated = ~masks["0.weight"].flatten(1).any(dim=1)
        with torch.no_grad():
            model[0].bias.copy_(sign * (model[0].bias.abs() + 0.1))
        small = srigl.condense(model, masks, backend="naive", structured=True)
        n_removed = small.condense_report.removed.get("0", 0)
        if next_kernel == 1 or sign < 0:  # folded into a 1x1 bias, or relu(b) == 0
            assert n_removed == int(ablated.sum()) > 0
            assert small[0].out_features == 8 - n_removed == small[2].in_channels
        else:  # a k x k conv with zero padding sees relu(b) > 0 differently at the borders
            assert n_removed == 0 and small[0].out_features == 8
        assert_close_outputs(masked_copy(model, masks), small, (3, 4, 7, 6))


class Odd(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.reflect = nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect")
        self.uneven = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.uneven(self.reflect(x)).mean((2, 3)))


def test_layers_that_cannot_be_condensed_stay_masked_dense_and_are_listed():
    torch.manual_seed(0)
    model = Odd()
    masks = fan_in_masks(model)
    masks["uneven.weight"][0] = True  # one output channel with the full fan-in
    small = srigl.condense(model, masks, backend="fused")
    kept = small.condense_report.kept
    assert set(kept) == {"reflect", "uneven"}
    assert "padding_mode='reflect'" in kept["reflect"]
    assert "not constant fan-in" in kept["uneven"]
    assert type(small.reflect) is nn.Conv2d and type(small.uneven) is nn.Conv2d
    assert small.condense_report.condensed == ["fc"]
    assert_close_outputs(masked_copy(model, masks), small, (2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"'reflect'.*padding_mode"):
        srigl.condense(model, masks, backend="fused", strict=True)
    # the dense backend takes any mask; the padding mode still keeps 'reflect' masked-dense
    assert set(srigl.condense(model, masks, backend="dense").condense_report.kept) == {"reflect"}


@pytest.mark.parametrize(
    "backend,structured", [("fused", False), ("fused", True), ("naive", True), ("dense", False)]
)
def test_condensed_cnn_state_dict_round_trips_through_a_file(tmp_path, backend, structured):
    model = prepared(tv_resnet18)
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend=backend, structured=structured)
    path = tmp_path / "cnn.pt"
    torch.save(small.state_dict(), path)
    skeleton = tv_resnet18()  # other weights, BN statistics and biases; train mode
    torch.nn.init.normal_(skeleton.fc.bias)
    again = load_condensed(skeleton, masks, path, backend=backend, structured=structured)
    assert_close_outputs(masked_copy(model, masks), again)


# --------------------------------------------------------------------------- attention


class Wrapped(nn.Module):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.attn = mha

    def forward(self, *args, **kwargs):
        return self.attn(*args, **kwargs)


def _attention(batch_first: bool, kdim: int | None = None, seed: int = 0) -> Wrapped:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim)
    with torch.no_grad():
        for p in mha.parameters():
            if p.dim() == 1:
                p.normal_()
    return Wrapped(mha).eval()


def _masked_attention(model: Wrapped):
    masks = fan_in_masks(model)
    assert masks, "attention projections have masks"
    small = srigl.condense(model, masks, backend="naive")
    assert isinstance(small.attn, CondensedMultiheadAttention)
    return masked_copy(model, masks), small


def _check(ref, small, *args, **kwargs):
    with torch.no_grad():
        want, want_w = ref(*args, **kwargs)
        got, got_w = small(*args, **kwargs)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    if want_w is None:
        assert got_w is None
    else:
        torch.testing.assert_close(got_w, want_w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
def test_condensed_attention_equals_multihead_attention_on_the_call_patterns(batch_first):
    ref, small = _masked_attention(_attention(batch_first))
    g = torch.Generator().manual_seed(1)
    b, n, s = 3, 5, 7
    x = torch.randn((b, n, 16) if batch_first else (n, b, 16), generator=g)
    mem = torch.randn((b, s, 16) if batch_first else (s, b, 16), generator=g)
    pad = torch.zeros(b, n, dtype=torch.bool)
    pad[0, -2:] = True
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    float_mask = torch.randn(b * 4, n, s, generator=g)
    # torchvision's ViT: self-attention, need_weights=False
    _check(ref, small, x, x, x, need_weights=False)
    _check(ref, small, x, x, x)  # default need_weights=True, head-averaged weights
    _check(ref, small, x, x, x, need_weights=True, average_attn_weights=False)
    _check(ref, small, x, x, x, key_padding_mask=pad, need_weights=False)
    _check(ref, small, x, x, x, key_padding_mask=pad.float() * -1e4, need_weights=False)
    _check(ref, small, x, x, x, attn_mask=causal, need_weights=False)
    _check(ref, small, x, x, x, attn_mask=causal, is_causal=True, need_weights=False)
    _check(ref, small, x, x, x, attn_mask=causal, key_padding_mask=pad)
    _check(ref, small, x, mem, mem, attn_mask=float_mask, need_weights=False)  # cross-attention
    _check(
        ref,
        small,
        x[:, 0] if batch_first else x[0],
        x[:, 0] if batch_first else x[0],
        x[:, 0] if batch_first else x[0],
        need_weights=False,
    )  # unbatched [L, E]


def test_condensed_attention_with_separate_key_value_dims():
    ref, small = _masked_attention(_attention(True, kdim=12))
    assert small.attn.in_proj is None and small.attn.k_proj.in_features == 12
    g = torch.Generator().manual_seed(2)
    q, kv = torch.randn(2, 5, 16, generator=g), torch.randn(2, 6, 12, generator=g)
    _check(ref, small, q, kv, kv, need_weights=False)
    _check(ref, small, q, kv, kv)


def test_attention_with_add_bias_kv_stays_masked_dense():
    torch.manual_seed(0)
    model = Wrapped(nn.MultiheadAttention(16, 4, add_bias_kv=True, batch_first=True)).eval()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive")
    assert type(small.attn) is nn.MultiheadAttention
    assert "add_bias_kv" in small.condense_report.kept["attn"]
    x = torch.randn(2, 5, 16)
    _check(masked_copy(model, masks), small, x, x, x, need_weights=False)


def test_condensed_torchvision_vit_equals_the_masked_model():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(32, 8, 2, 2, 32, 64, num_classes=10)
    randomise_biases(model)
    nn.init.normal_(model.heads.head.weight)  # torchvision zero-initialises the head
    model.eval()
    masks = fan_in_masks(model)
    for backend in ("fused", "naive"):
        small = srigl.condense(model, masks, backend=backend, structured=True)
        kinds = {type(m).__name__ for m in small.modules()}
        assert "CondensedMultiheadAttention" in kinds and "MultiheadAttention" not in kinds
        assert isinstance(small.conv_proj, ConvBackend)  # the patch embedding
        assert_close_outputs(masked_copy(model, masks), small)


def test_a_cnn_with_batchnorms_that_cannot_fold_round_trips_folded(tmp_path):
    """WRN-22-2 is pre-activation: each block's bn2 follows a conv and folds, its bn1 and the
    final bn read sums and stay; the kept BNs' statistics in the file do not mean "unfolded"."""
    from suite.models import create_model

    torch.manual_seed(0)
    model = create_model("wrn22_2", 10, (3, 32, 32)).eval()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="fused")
    report = small.condense_report
    assert report.folded and any(isinstance(m, nn.BatchNorm2d) for m in small.modules())
    path = tmp_path / "wrn.pt"
    torch.save(small.state_dict(), path)
    again = load_condensed(create_model("wrn22_2", 10, (3, 32, 32)), masks, path, backend="fused")
    assert again.condense_report.folded == report.folded
    assert_close_outputs(masked_copy(model, masks), again, (2, 3, 32, 32))


def test_a_cnn_condensed_in_train_mode_round_trips_with_its_batchnorms(tmp_path):
    """condense() folds eval-mode BatchNorms only; a model condensed in train mode keeps them,
    and load_condensed (fold_bn=True by default) rebuilds it unfolded from what the file holds."""
    model = prepared(tv_resnet18).train()
    masks = fan_in_masks(model)
    small = srigl.condense(model, masks, backend="naive")
    assert any(isinstance(m, nn.BatchNorm2d) for m in small.modules())
    path = tmp_path / "cnn.pt"
    torch.save(small.state_dict(), path)
    again = load_condensed(tv_resnet18(), masks, path, backend="naive")
    small.eval(), again.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(again(x), small(x))
