"""srigl.SparseConfig: one object holds every trainer option; keywords and config= are the same;
a trainer class states only its differing defaults; grow_init sets the value of grown weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import srigl
from srigl.errors import SparsityConfigError
from srigl.trainers import TRAINERS
from srigl.trainers.base import SparseTrainer
from srigl.trainers.options import check_trainer_options


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(20, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(), nn.Linear(32, 10)
    )


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, trainer, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 20, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        trainer.step()
        opt.zero_grad()


def test_sparse_config_is_exported_frozen_and_hashable():
    cfg = srigl.SparseConfig(dense_layers=["head"])
    assert cfg.dense_layers == ("head",)  # stored as a tuple: the config cannot change
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sparsity = 0.5  # type: ignore[misc]
    assert hash(cfg) == hash(srigl.SparseConfig(dense_layers=("head",)))


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("sparsity", "abc", r"sparsity='abc' is not a number; allowed: 0 < sparsity < 1"),
        ("gamma_sal", -1, r"gamma_sal=-1 is invalid; allowed: >= 0"),
        ("ablation", "yes", r"ablation='yes' is not a bool; allowed: True or False"),
        ("constant_fan_in", 1, r"constant_fan_in=1 is not a bool; allowed: True, False or None"),
        ("dense_layers", "head", r"dense_layers='head' is not a list"),
        ("seed", 1.5, r"seed=1.5"),
        ("grow_init", "ones", r"grow_init='ones' is invalid; allowed: one of \['zero', 'small"),
        ("grow_init", float("nan"), r"grow_init=nan"),
    ],
)
def test_a_bad_option_is_refused_on_construction_in_one_line_naming_it(option, value, message):
    with pytest.raises(SparsityConfigError, match=message) as err:
        srigl.SparseConfig(**{option: value})
    assert "\n" not in str(err.value)


def test_keywords_and_config_build_the_same_trainer():
    options = {"sparsity": 0.8, "total_steps": 20, "delta_t": 3, "seed": 5}
    results = []
    for how in ("keywords", "config"):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        if how == "keywords":
            trainer = srigl.create_trainer("srigl", model, opt, **options)
        else:
            cfg = srigl.SparseConfig(**options)
            trainer = srigl.create_trainer("srigl", model, opt, config=cfg)
        train_steps(model, opt, trainer, 7)
        results.append(
            (trainer.config, trainer.stats(), [p.detach().clone() for p in model.parameters()])
        )
        trainer.close()
    (cfg_a, stats_a, w_a), (cfg_b, stats_b, w_b) = results
    assert cfg_a == cfg_b and stats_a == stats_b and stats_a["updates"] == 2
    assert all(torch.equal(a, b) for a, b in zip(w_a, w_b))


def test_options_given_with_a_config_are_refused():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(SparsityConfigError, match=r"options \['sparsity'\] given with config="):
        srigl.create_trainer("rigl", model, opt, config=srigl.SparseConfig(), sparsity=0.5)


def test_an_unknown_option_is_refused_naming_it_and_the_allowed():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(
        SparsityConfigError, match=r"unknown options \['grow'\]; allowed: .*grow_init"
    ):
        srigl.create_trainer("rigl", model, opt, total_steps=10, grow=1)


def test_a_trainers_defaults_fill_the_options_not_given_and_a_configs_none_fields():
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with srigl.create_trainer(
        "srigl", model, opt, config=srigl.SparseConfig(total_steps=10, delta_t=2)
    ) as t:
        assert t.config.constant_fan_in is True and t.config.sparse_init is True
    with srigl.create_trainer(
        "srigl", model, opt, total_steps=10, delta_t=2, sparse_init=False
    ) as t:
        assert t.config.sparse_init is False and t.constant_fan_in is True
    with srigl.create_trainer(
        "rigl", model, opt, total_steps=10, delta_t=2, constant_fan_in=None
    ) as t:
        assert t.config.constant_fan_in is False


def test_a_subclass_states_only_what_differs_and_inherits_the_rest():
    class Slow(SparseTrainer):
        defaults = {"delta_t": 7}

        def update_layer(self, layer, w, mask, grad, f):
            return self.drop_and_grow(layer, w, mask, grad.abs(), f)

    cfg = Slow.resolve_config(options={"total_steps": 50})
    assert cfg.delta_t == 7 and cfg.constant_fan_in is False and cfg.sparse_init is False
    assert Slow.resolve_config(options={"total_steps": 50, "delta_t": 9}).delta_t == 9


def test_check_trainer_options_returns_the_trainers_full_config():
    cfg = check_trainer_options("srigl", sparsity=0.95, total_steps=100)
    assert cfg == srigl.SparseConfig(
        sparsity=0.95, total_steps=100, constant_fan_in=True, sparse_init=True
    )
    with pytest.raises(
        SparsityConfigError, match="constant_fan_in=False is invalid for trainer 'srigl'"
    ):
        check_trainer_options("srigl", constant_fan_in=False)
    assert check_trainer_options("dense", sparsity=0.0).sparsity == 0.0  # dense ignores it
    with pytest.raises(SparsityConfigError, match=r"sparsity=0.0 is invalid"):
        check_trainer_options("rigl", sparsity=0.0)


@pytest.mark.parametrize("name", [n for n in TRAINERS.names() if TRAINERS.get(n).dynamic])
@pytest.mark.parametrize("grow_init", ["zero", 0.25, "small_random"])
def test_grown_weights_start_at_grow_init_with_zero_optimizer_state(name, grow_init):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = srigl.create_trainer(
        name, model, opt, sparsity=0.8, total_steps=40, delta_t=2, grow_init=grow_init
    )
    train_steps(model, opt, trainer, 1)
    before = {n: m.clone() for n, m in trainer.masks.items()}
    kept_std = {
        n: float(layer.param.detach()[before[n]].std()) for n, layer in trainer.layers.items()
    }
    # the update step: its optimizer step first, then trainer.step() drops and grows
    x, y = torch.randn(16, 20), torch.randint(0, 10, (16,))
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert trainer.step()
    grown_any = False
    for n, layer in trainer.layers.items():
        grown = trainer.masks[n] & ~before[n]
        values = layer.param.detach()[grown]
        momentum = opt.state[layer.param]["momentum_buffer"][grown]
        assert torch.equal(momentum, torch.zeros_like(momentum))
        grown_any |= bool(grown.any())
        if grow_init == "zero":
            assert torch.equal(values, torch.zeros_like(values))
        elif grow_init == 0.25:
            assert torch.equal(values, torch.full_like(values, 0.25))
        else:  # small_random: non-zero, about 1e-2 of the kept weights' spread
            assert bool((values != 0).all())
            assert float(values.abs().max()) < 0.1 * kept_std[n]
    assert grown_any
    trainer.close()


def test_small_random_grow_init_is_reproducible_from_the_seed():
    weights = []
    for _ in range(2):
        model = mlp()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = srigl.create_trainer(
            "rigl", model, opt, sparsity=0.8, total_steps=40, delta_t=2, grow_init="small_random"
        )
        train_steps(model, opt, trainer, 4)
        weights.append([p.detach().clone() for p in model.parameters()])
        trainer.close()
    assert all(torch.equal(a, b) for a, b in zip(*weights))
