"""One trainer per model (close() and ``with``), and trainers built before ``model.to()``."""

from __future__ import annotations

import pytest
import torch
from sparse_checks import assert_invariants, toy_mlp, train_steps

import srigl
from srigl.errors import TrainerConflictError


def _make(model, name="srigl", **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    kwargs = {"sparsity": 0.8, "total_steps": 40, "delta_t": 4, **kwargs}
    return opt, srigl.create_trainer(name, model, opt, **kwargs)


def test_a_second_trainer_on_the_same_model_raises_naming_the_parameters():
    model = toy_mlp()
    _, first = _make(model)
    before = {n: m.clone() for n, m in first.masks.items()}
    with pytest.raises(TrainerConflictError, match=r"\['0.weight', '2.weight', '4.weight'\]"):
        _make(model, "rigl")
    # the refused trainer changed nothing: the first one's masks, and only its hooks, remain
    assert all(len(model[i].weight._backward_hooks) == 1 for i in (0, 2, 4))
    assert all(torch.equal(first.masks[n], m) for n, m in before.items())
    assert_invariants(first)


def test_close_removes_the_hooks_so_a_new_trainer_trains_alone():
    model = toy_mlp()
    _, first = _make(model)
    first.close()
    first.close()  # idempotent
    opt, second = _make(model, "rigl", seed=3)
    for _ in train_steps(model, opt, second, 6, (20,), 10):
        assert_invariants(second)
    # only the second trainer's mask shapes the gradient (no stacked hooks): every active
    # position of the second mask gets a gradient somewhere
    model(torch.randn(64, 20)).pow(2).sum().backward()
    g = model[0].weight.grad
    assert torch.count_nonzero(g[second.masks["0.weight"]]) > 0.9 * second.masks["0.weight"].sum()


def test_a_context_manager_closes_the_trainer():
    model = toy_mlp()
    with _make(model)[1] as trainer:
        assert trainer.owns(model[0].weight)
    assert not trainer.owns(model[0].weight)
    _make(model)  # allowed again


def test_other_models_and_dense_trainers_do_not_conflict():
    _make(toy_mlp())
    _make(toy_mlp())
    model = toy_mlp()
    _make(model, "dense")
    _make(model, "dense")
    _make(model)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
@pytest.mark.parametrize("name", ["set", "rigl", "srigl"])
def test_trainer_built_before_model_to_dtype_follows_the_weights(name, dtype):
    model = toy_mlp()
    opt, trainer = _make(model, name)
    model.to(dtype)
    gen = torch.Generator().manual_seed(0)
    for _ in range(6):  # one update at step 4
        x = torch.randn(16, 20, generator=gen).to(dtype)
        y = torch.randint(0, 10, (16,), generator=gen)
        torch.nn.functional.cross_entropy(model(x).float(), y).backward()
        assert model[0].weight.grad.dtype == dtype
        opt.step()
        trainer.step()
        opt.zero_grad()
        assert_invariants(trainer)
    assert trainer.stats()["updates"] == 1


@pytest.mark.gpu
def test_trainer_built_before_model_cuda_follows_the_weights():
    model = toy_mlp()
    opt, trainer = _make(model)
    model.cuda()
    for _ in train_steps(model, opt, trainer, 5, (20,), 10, device="cuda"):
        assert all(m.device.type == "cuda" for m in trainer.masks.values())
        assert_invariants(trainer)
    assert trainer.stats()["updates"] == 1
