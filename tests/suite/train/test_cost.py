"""Pieces of the training harness checked by hand-computed values: top-k counts, parameter,
FLOP and byte counts of sparse models, learning-rate schedules, optimizers, RNG state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from backends.registry import UnknownNameError
from suite.checkpointing import rng_state, set_rng_state
from suite.train.cost import inference_flops, model_bytes, param_counts, topk_correct
from suite.train.optim import create_optimizer, create_scheduler


def test_topk_correct_counts_targets_among_the_k_largest_logits():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.3], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert topk_correct(logits, target, (1, 2, 5)) == [1, 2, 3]


def _two_layer_mlp() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """8 -> 4 -> 3 MLP; layer 0 has constant fan-in 2 with one ablated neuron, layer 2 is
    unstructured with row fan-ins 1, 3, 0."""
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    m0 = torch.zeros(4, 8, dtype=torch.bool)
    m0[0, :2] = m0[1, 2:4] = m0[3, 6:] = True  # neuron 2 ablated
    m2 = torch.zeros(3, 4, dtype=torch.bool)
    m2[0, 0] = True
    m2[1, :3] = True
    return model, {"0.weight": m0, "2.weight": m2}


def test_param_counts_of_dense_nonzero_and_condensed_models():
    model, masks = _two_layer_mlp()
    counts = param_counts(model, masks)
    assert counts["dense"] == 8 * 4 + 4 + 4 * 3 + 3
    assert counts["nonzero"] == 6 + 4 + 4 + 3
    # condensed: n_active x k_max values: 3 x 2 and 2 x 3
    assert counts["condensed"] == 6 + 4 + 6 + 3


def test_flops_count_multiply_adds_per_sample_for_each_view():
    model, masks = _two_layer_mlp()
    flops = inference_flops(model, masks, (8,))
    assert flops == {"dense": 32 + 12, "sparse": 6 + 4, "condensed": 6 + 6}


def test_conv_flops_scale_with_output_positions_and_mask_density():
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 25, 2))
    mask = torch.zeros(4, 2, 3, 3, dtype=torch.bool)
    mask[:, 0, 0, :] = True  # fan-in 3 in every output channel
    flops = inference_flops(model, {"0.weight": mask}, (2, 5, 5))
    positions = 25
    assert flops["dense"] == positions * 4 * 18 + 100 * 2
    assert flops["sparse"] == flops["condensed"] == positions * 4 * 3 + 100 * 2


def test_attention_projections_are_counted_once_per_token():
    model = nn.MultiheadAttention(8, 2, batch_first=True)
    flops = inference_flops(model_wrapper(model), {}, (5, 8))
    assert flops["dense"] == 5 * (3 * 8 * 8) + 5 * (8 * 8)


def model_wrapper(attention: nn.MultiheadAttention) -> nn.Module:
    class SelfAttention(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = attention

        def forward(self, x):
            return self.attn(x, x, x, need_weights=False)[0]

    return SelfAttention()


def test_model_bytes_of_csr_and_condensed_storage():
    model, masks = _two_layer_mlp()
    sizes = model_bytes(model, masks)
    dense = (32 + 4 + 12 + 3) * 4
    assert sizes["dense"] == dense
    biases = (4 + 3) * 4
    csr = (6 * 8 + 5 * 4) + (4 * 8 + 4 * 4)  # values + int32 cols, int32 row pointers
    assert sizes["sparse_csr"] == biases + csr
    condensed = (6 * 6 + 3 * 4) + (6 * 6 + 2 * 4)  # fp32 + int16 per entry, int32 active rows
    assert sizes["condensed"] == biases + condensed


def test_metrics_accept_the_mask_of_a_tied_weight_under_its_linear_name():
    # srigl names a weight tied to an embedding after its Linear owner ('head.weight'), which
    # named_parameters() lists only under the embedding; the tied weight counts once
    embed, head = nn.Embedding(6, 4), nn.Linear(4, 6, bias=False)
    head.weight = embed.weight
    model = nn.ModuleDict({"embed": embed, "head": head})
    mask = torch.zeros(6, 4, dtype=torch.bool)
    mask[:, :2] = True
    counts = param_counts(model, {"head.weight": mask})
    assert counts == {"dense": 24, "nonzero": 12, "condensed": 12}
    assert model_bytes(model, {"head.weight": mask})["dense"] == 24 * 4


# --------------------------------------------------------------------------- schedules


def _lrs(name: str, steps_per_epoch: int, total: int, **options) -> list[float]:
    model = nn.Linear(2, 2)
    opt = create_optimizer("sgd", model, lr=1.0, weight_decay=0.0)
    sched = create_scheduler(name, opt, steps_per_epoch, total, **options)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_schedule_warms_up_linearly_then_decays_to_zero():
    lrs = _lrs("cosine", 2, 10, warmup_epochs=1)
    assert lrs[:2] == pytest.approx([0.5, 1.0])
    assert lrs[2] == pytest.approx(1.0) and lrs[6] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_step_schedule_multiplies_by_gamma_at_milestone_epochs():
    lrs = _lrs("step", 2, 8, milestones=[1, 3], gamma=0.1)
    assert lrs == pytest.approx([1, 1, 0.1, 0.1, 0.1, 0.1, 0.01, 0.01])


def test_step_schedule_can_decay_every_fraction_of_an_epoch():
    lrs = _lrs("step", 5, 10, milestones=[], every=0.4, gamma=0.5)
    assert lrs[:5] == pytest.approx([1, 1, 0.5, 0.5, 0.25])


def test_unknown_schedule_and_optimizer_errors_list_the_known_names():
    model = nn.Linear(2, 2)
    with pytest.raises(UnknownNameError, match="cosine"):
        create_scheduler("linear-typo", create_optimizer("sgd", model), 1, 1)
    with pytest.raises(UnknownNameError, match="adamw"):
        create_optimizer("lamb", model)


def test_optimizers_can_exempt_biases_and_norms_from_weight_decay():
    model = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    opt = create_optimizer("adamw", model, weight_decay=0.3, decay_norm_and_bias=False)
    decays = {len(g["params"]): g["weight_decay"] for g in opt.param_groups}
    assert decays == {1: 0.3, 3: 0.0}


# --------------------------------------------------------------------------- RNG state


def test_rng_state_round_trips_torch_numpy_and_python_through_plain_values():
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    state = rng_state()
    assert isinstance(state["numpy"]["keys"], list) and isinstance(
        state["python"]["internal"], list
    )
    first = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2] == again[2]
