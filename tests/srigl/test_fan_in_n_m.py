"""Topology constraints of every sparse trainer: a fixed ``fan_in`` and ``n_m`` (N:M).

The hidden rules (exactly N non-zeros per group of M inputs, exactly the given fan-in per active
neuron) hold after init and after every update, for Linear and Conv2d layers (grouped and
depthwise included), with every optimizer whose state the trainer masks; the options' errors are
one line naming the bad value; a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from sparse_checks import assert_invariants, assert_n_m, toy_mlp, train_steps
from torch import nn

import srigl
from srigl.errors import SparsityConfigError, StateDictError

SPARSE = [n for n in srigl.trainer_names() if n != "dense"]
DYNAMIC = [n for n in SPARSE if srigl.TRAINERS.get(n).dynamic]
#: the optimizers the trainer masks the state of (every weight-shaped tensor of their state)
OPTIMIZERS = {
    "sgd-momentum": (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    "adam": (torch.optim.Adam, {"lr": 1e-2}),
    "adamw-amsgrad": (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.3, "amsgrad": True}),
    "rmsprop-centered": (torch.optim.RMSprop, {"lr": 1e-3, "momentum": 0.9, "centered": True}),
}


def conv_net(seed: int = 0) -> nn.Module:
    """Conv layers of every kind, fan-ins multiples of 4 and 8: a plain 3x3 conv (fan-in 8*9),
    a grouped 3x3 conv (groups=2: 4*9), a depthwise 2x2 conv (fan-in 4), a 1x1 conv (16)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, groups=2),
        nn.ReLU(),
        nn.Conv2d(16, 16, 2, groups=16),
        nn.Conv2d(16, 16, 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


MODELS = {
    "linear": (lambda: toy_mlp((24, 48, 32, 10)), (24,)),
    "conv": (conv_net, (8, 5, 5)),
}


def make(name, model, opt=("sgd-momentum"), **kwargs):
    opt_cls, opt_kwargs = OPTIMIZERS[opt]
    optimizer = opt_cls(model.parameters(), **opt_kwargs)
    args = {"total_steps": 40, "delta_t": 4, "alpha": 0.5, **kwargs}
    return optimizer, srigl.create_trainer(name, model, optimizer, **args)


# ------------------------------------------------------------------ N:M


@pytest.mark.parametrize("n_m", [(2, 4), (1, 4)])
@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", SPARSE)
def test_every_group_of_m_keeps_exactly_n_after_init_and_after_every_update(name, kind, n_m):
    build, in_shape = MODELS[kind]
    model = build()
    opt, trainer = make(name, model, n_m=n_m)
    assert trainer.constant_fan_in and trainer.n_m == n_m
    assert trainer.sparsity == pytest.approx(1 - n_m[0] / n_m[1])
    assert_invariants(trainer)
    assert_n_m(trainer)
    updates = 0
    for updated in train_steps(model, opt, trainer, 30, in_shape, 10):
        updates += updated
        assert_invariants(trainer)
        assert_n_m(trainer)
    assert updates == (7 if trainer.dynamic else 0)


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("name", DYNAMIC)
def test_n_m_holds_with_every_optimizer_and_its_state_stays_zero_where_masked(name, opt):
    model = conv_net()
    optimizer, trainer = make(name, model, opt=opt, n_m=(2, 4))
    for _ in train_steps(model, optimizer, trainer, 13, (8, 5, 5), 10):
        assert_invariants(trainer)  # weights, gradients and optimizer state zero where masked
        assert_n_m(trainer)
    assert trainer.stats()["updates"] == 3


def test_n_m_masks_actually_change_at_updates():
    model = toy_mlp((24, 48, 32, 10))
    opt, trainer = make("rigl", model, n_m=(2, 4))
    before = {n: m.clone() for n, m in trainer.masks.items()}
    for _ in train_steps(model, opt, trainer, 8, (24,), 10):
        pass
    assert any(not torch.equal(before[n], m) for n, m in trainer.masks.items())


def test_conv_groups_are_consecutive_positions_of_the_flattened_fan_in_c_dy_dx():
    # M = 4 divides kh*kw = 4: no group crosses a channel; with a 3x3 kernel (M = 4 does not
    # divide 9) groups run along the flattened (c, dy, dx) order across channels
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 2), nn.Conv2d(8, 8, 3), nn.Flatten(), nn.LazyLinear(4))
    model(torch.zeros(1, 3, 6, 6))
    opt, trainer = make("static", model, n_m=(1, 4), dense_layers=["3"])
    per_channel = trainer.masks["0.weight"].reshape(8, 3, 4).sum(2)
    assert torch.all(per_channel == 1)
    flat = trainer.masks["1.weight"].reshape(8, 8 * 9 // 4, 4).sum(2)
    assert torch.all(flat == 1)


def test_srigl_ablation_under_n_m_empties_a_neuron_and_keeps_n_per_group_in_the_others():
    model = toy_mlp((24, 48, 32, 10))
    opt, trainer = make("srigl", model, n_m=(2, 4), gamma_sal=1.0, alpha=0.9)
    ablated = 0
    for _ in train_steps(model, opt, trainer, 30, (24,), 10):
        assert_invariants(trainer)
        assert_n_m(trainer)
        ablated = max(ablated, sum(i["n_ablated"] for i in trainer.stats()["layers"].values()))
    assert ablated > 0  # a neuron with no weight at all, the others still N per group


def test_n_m_sets_uniform_distribution_and_stats_report_it():
    model = toy_mlp()
    _, trainer = make("rigl", model, n_m=(1, 4))
    assert trainer.distribution == "uniform" and trainer.config.distribution == "uniform"
    stats = trainer.stats()
    assert stats["n_m"] == [1, 4]
    assert all(info["fan_in"] == layer.fan_in // 4 for info, layer in
               zip(stats["layers"].values(), trainer.layers.values()))  # fmt: skip


def test_a_layer_whose_fan_in_is_not_a_multiple_of_m_may_be_kept_dense():
    model = toy_mlp((20, 48, 30, 10))  # fan-ins 20, 48, 30: the last is not a multiple of 4
    with pytest.raises(SparsityConfigError, match=r"layer '4.weight' has fan-in 30, not a multi"):
        make("rigl", model, n_m=(2, 4))
    _, trainer = make("rigl", toy_mlp((20, 48, 30, 10)), n_m=(2, 4), dense_layers=["4"])
    assert sorted(trainer.layers) == ["0.weight", "2.weight"]
    # the dense layer counts in full: the global sparsity is below 1 - N/M, and 0.5 agrees
    total = 20 * 48 + 48 * 30 + 30 * 10
    assert trainer.sparsity == pytest.approx(1 - (total - (20 * 48 + 48 * 30) / 2) / total)
    make("rigl", toy_mlp((20, 48, 30, 10)), n_m=(2, 4), dense_layers=["4"], sparsity=0.5)


# ------------------------------------------------------------------ fixed fan-in


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("name", SPARSE)
def test_every_active_neuron_keeps_exactly_the_fixed_fan_in(name, kind):
    build, in_shape = MODELS[kind]
    model = build()
    opt, trainer = make(name, model, fan_in=4)

    def check() -> None:
        assert_invariants(trainer)
        for mask in trainer.masks.values():
            rows = mask.reshape(mask.shape[0], -1).sum(1)
            assert set(rows.tolist()) <= {0, 4}

    check()
    for _ in train_steps(model, opt, trainer, 30, in_shape, 10):
        check()
    assert all(info["fan_in"] == 4 for info in trainer.stats()["layers"].values())


def test_fan_in_mapping_takes_the_first_matching_glob_per_layer():
    model = toy_mlp((24, 48, 32, 10))
    _, trainer = make("srigl", model, fan_in={"0": 6, "*": 3})
    assert {n: layer.fixed_fan_in for n, layer in trainer.layers.items()} == {
        "0.weight": 6,
        "2.weight": 3,
        "4.weight": 3,
    }
    assert trainer.config.fan_in == (("0", 6), ("*", 3))


def test_fan_in_fixes_the_budget_and_the_sparsity_follows():
    model = toy_mlp((24, 48, 32, 10))
    _, trainer = make("rigl", model, fan_in=8)
    total = 24 * 48 + 48 * 32 + 32 * 10
    assert trainer.sparsity == pytest.approx(1 - 8 * (48 + 32 + 10) / total)
    assert [layer.budget for layer in trainer.layers.values()] == [8 * 48, 8 * 32, 8 * 10]
    # a sparsity within half a weight per sparse neuron of it agrees
    make("rigl", toy_mlp((24, 48, 32, 10)), fan_in=8, sparsity=round(trainer.sparsity, 2))


def test_srigl_with_a_fixed_fan_in_does_not_redistribute_after_ablation():
    model = toy_mlp((24, 48, 32, 10))
    opt, trainer = make("srigl", model, fan_in=5, gamma_sal=1.0, alpha=0.9)
    ablated = 0
    for _ in train_steps(model, opt, trainer, 30, (24,), 10):
        assert_invariants(trainer)
        for info in trainer.stats()["layers"].values():
            assert info["fan_in"] == 5
            ablated = max(ablated, info["n_ablated"])
    assert ablated > 0


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("n_m", "match"),
    [
        ((0, 4), r"n_m=\(0, 4\) is invalid; allowed: \(N, M\) with integers 1 <= N < M"),
        ((4, 4), r"n_m=\(4, 4\) is invalid"),
        ((3, 2), r"n_m=\(3, 2\) is invalid"),
        ((2,), r"n_m=\(2,\) is not a pair"),
        ("2:4", r"n_m='2:4' is not a pair"),
        ((2.0, 4), r"n_m=2.0 is not an integer"),
    ],
)
def test_bad_n_m_is_one_line_naming_it(n_m, match):
    with pytest.raises(SparsityConfigError, match=match):
        srigl.SparseConfig(n_m=n_m)


@pytest.mark.parametrize("distribution", ["erk", "er"])
def test_er_and_erk_with_n_m_are_refused(distribution):
    with pytest.raises(SparsityConfigError, match=rf"distribution='{distribution}' is invalid "):
        srigl.SparseConfig(n_m=(2, 4), distribution=distribution)


def test_sparsity_disagreeing_with_n_m_names_both():
    with pytest.raises(SparsityConfigError, match=r"sparsity=0.9 disagrees with n_m=\(2, 4\)"):
        srigl.SparseConfig(n_m=(2, 4), sparsity=0.9)
    model = toy_mlp((24, 48, 32, 10))
    with pytest.raises(SparsityConfigError, match=r"sparsity=0.3 disagrees with n_m=\(2, 4\)"):
        make("rigl", model, n_m=(2, 4), sparsity=0.3)


@pytest.mark.parametrize(
    ("fan_in", "match"),
    [
        (0, r"fan_in=0 is invalid; allowed: an integer >= 1"),
        (2.5, r"fan_in=2.5 is not an integer"),
        ({}, r"fan_in=\{\} is empty"),
        ({"fc*": 0}, r"fan_in\['fc\*'\]=0 is invalid"),
    ],
)
def test_bad_fan_in_is_one_line_naming_it(fan_in, match):
    with pytest.raises(SparsityConfigError, match=match):
        srigl.SparseConfig(fan_in=fan_in)


def test_fan_in_and_n_m_together_are_refused():
    with pytest.raises(SparsityConfigError, match=r"are both given; allowed: one of them"):
        srigl.SparseConfig(fan_in=4, n_m=(2, 4))


def test_fan_in_above_a_layers_fan_in_names_the_layer():
    with pytest.raises(SparsityConfigError, match=r"fan_in=30 is larger than layer '0.weight'"):
        make("srigl", toy_mlp((24, 48, 32, 10)), fan_in=30)
    # kept dense, the layer no longer limits it
    make("srigl", toy_mlp((24, 48, 32, 10)), fan_in=30, dense_first_layer=True)


def test_sparsity_disagreeing_with_fan_in_names_both():
    with pytest.raises(SparsityConfigError, match=r"sparsity=0.5 disagrees with fan_in=8, whic"):
        make("rigl", toy_mlp((24, 48, 32, 10)), fan_in=8, sparsity=0.5)


def test_fan_in_globs_must_match_a_layer_and_cover_every_sparse_layer():
    with pytest.raises(SparsityConfigError, match=r"fan_in pattern 'fc\*' matches no"):
        make("rigl", toy_mlp(), fan_in={"fc*": 4, "*": 4})
    with pytest.raises(SparsityConfigError, match=r"sparse layer '2.weight' matches no fan_in"):
        make("rigl", toy_mlp(), fan_in={"0": 4, "4": 4})


# ------------------------------------------------------------------ state and defaults


def _run(model, opt, trainer, steps, seed):
    for _ in train_steps(model, opt, trainer, steps, (24,), 10, seed=seed):
        pass


@pytest.mark.parametrize("name", ["srigl", "rigl", "set"])
def test_resume_under_n_m_continues_exactly_as_an_uninterrupted_run(name):
    kwargs = {"n_m": (2, 4), "gamma_sal": 1.0}
    model_a = toy_mlp((24, 48, 32, 10), seed=3)
    opt_a, tr_a = make(name, model_a, **kwargs)
    _run(model_a, opt_a, tr_a, 10, seed=1)
    saved = (model_a.state_dict(), opt_a.state_dict(), tr_a.state_dict())
    saved = copy.deepcopy(saved)
    _run(model_a, opt_a, tr_a, 12, seed=2)

    model_b = toy_mlp((24, 48, 32, 10), seed=4)  # other initial weights: all come from the state
    opt_b, tr_b = make(name, model_b, **kwargs)
    model_b.load_state_dict(saved[0])
    opt_b.load_state_dict(saved[1])
    tr_b.load_state_dict(saved[2])
    _run(model_b, opt_b, tr_b, 12, seed=2)
    assert tr_b.history == tr_a.history
    for n in tr_a.masks:
        assert torch.equal(tr_a.masks[n], tr_b.masks[n])
    for pa, pb in zip(model_a.parameters(), model_b.parameters()):
        assert torch.equal(pa, pb)


def test_loading_a_mask_that_breaks_n_m_is_refused():
    _, trainer = make("rigl", toy_mlp((24, 48, 32, 10)), n_m=(2, 4))
    state = trainer.state_dict()
    mask = state["masks"]["0.weight"]
    row = mask[0].clone()
    mask[0] = torch.sort(row, descending=True).values  # its 12 non-zeros in the first 3 groups
    with pytest.raises(StateDictError, match=r"groups of M = 4 inputs .* allowed: exactly N = 2"):
        trainer.load_state_dict(state)


def test_defaults_leave_the_options_off_and_the_masks_unchanged():
    cfg = srigl.SparseConfig()
    assert (cfg.sparsity, cfg.distribution, cfg.fan_in, cfg.n_m) == (0.9, "erk", None, None)
    assert cfg == srigl.SparseConfig(sparsity=0.9, distribution="erk")
    masks = []
    for options in ({}, {"fan_in": None, "n_m": None}):
        model = toy_mlp()
        _, trainer = make("srigl", model, sparsity=0.8, **options)
        masks.append(trainer.masks)
        trainer.close()
    assert all(torch.equal(masks[0][n], masks[1][n]) for n in masks[0])
    assert trainer.stats()["n_m"] is None and math.isclose(trainer.sparsity, 0.8)
