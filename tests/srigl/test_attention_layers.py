"""sparse_attention=False beyond nn.MultiheadAttention: timm / Hugging Face attention blocks by
type, any other model by the ``attention_layers`` globs; attention stays inside N."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import srigl
from srigl.masks import eligible_parameters, forced_dense_names, is_attention_module


def _trainer(model, **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    kwargs = {
        "sparsity": 0.5,
        "distribution": "uniform",
        "total_steps": 100,
        "delta_t": 10,
        **kwargs,
    }
    return srigl.create_trainer("srigl", model, opt, **kwargs)


def _assert_budget_counts_attention(trainer, model, attention_names):
    params = dict(model.named_parameters())
    dense = sum(params[n].numel() for n in attention_names)
    n_all = sum(p.numel for p in eligible_parameters(model))
    nnz = sum(int(m.sum()) for m in trainer.masks.values()) + dense
    # the shared constant fan-in allocation is neuron-granular: within the largest layer's
    # neuron count of d * N (srigl/budgets.py)
    assert abs(nnz - 0.5 * n_all) <= max(layer.out_features for layer in trainer.layers.values())


def test_timm_vit_attention_q_k_v_and_proj_stay_dense_inside_the_budget():
    timm = pytest.importorskip("timm")
    model = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32, patch_size=8,
        depth=2, embed_dim=64, num_heads=2,
    )  # fmt: skip
    attention = [
        n for n in dict(model.named_parameters()) if ".attn." in n and n.endswith("weight")
    ]
    assert sorted(attention) == [
        f"blocks.{i}.attn.{p}.weight" for i in (0, 1) for p in ("proj", "qkv")
    ]
    trainer = _trainer(model, sparse_attention=False)
    assert not set(attention) & set(trainer.masks)
    assert {"blocks.0.mlp.fc1.weight", "head.weight"} <= set(trainer.masks)
    _assert_budget_counts_attention(trainer, model, attention)
    trainer.close()
    assert set(attention) <= set(_trainer(model, sparse_attention=True).masks)


class BertSelfAttention(nn.Module):
    """A stand-in with Hugging Face's layout (query/key/value + an output dense layer)."""

    __module__ = "transformers.models.bert.modeling_bert"

    def __init__(self) -> None:
        super().__init__()
        self.query, self.key, self.value = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = BertSelfAttention()
        self.intermediate = nn.Linear(16, 256)
        self.output = nn.Linear(256, 16)


def test_hugging_face_attention_classes_are_recognised_by_type():
    model = Encoder()
    assert is_attention_module(model.attention) and not is_attention_module(model.intermediate)
    names = forced_dense_names(eligible_parameters(model), sparse_attention=False)
    assert names == {"attention.query.weight", "attention.key.weight", "attention.value.weight"}


class PlainAttention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.to_qkv = nn.Linear(16, 48)
        self.to_out = nn.Linear(16, 16)


class Custom(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mixer = PlainAttention()
        self.ff1 = nn.Linear(16, 256)
        self.ff2 = nn.Linear(256, 16)


def test_attention_layers_globs_name_any_other_attention_module():
    model = Custom()
    assert _trainer(model).masks.keys() >= {"mixer.to_qkv.weight"}  # unknown type: sparse
    model = Custom()
    trainer = _trainer(model, sparse_attention=False, attention_layers=["mixer"])
    assert set(trainer.masks) == {"ff1.weight", "ff2.weight"}
    _assert_budget_counts_attention(trainer, model, ["mixer.to_qkv.weight", "mixer.to_out.weight"])
    # a parameter glob works too
    params = eligible_parameters(Custom(), attention_layers=["*.to_qkv.weight"])
    assert [p.name for p in params if p.in_attention] == ["mixer.to_qkv.weight"]


def test_an_attention_layers_glob_that_matches_nothing_names_the_closest_modules():
    with pytest.raises(ValueError, match=r"attention_layers pattern 'mixr' .*closest: \['mixer'"):
        _trainer(Custom(), sparse_attention=False, attention_layers=["mixr"])
