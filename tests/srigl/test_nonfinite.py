"""Non-finite gradients: a clear error without a GradScaler; masked positions stay exactly 0."""

from __future__ import annotations

import pytest
import torch
from sparse_checks import assert_invariants, toy_mlp, train_steps
from torch import nn

import srigl
from srigl.errors import NonFiniteGradientError


def _trainer(model, name="srigl", **kwargs):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    kwargs = {"sparsity": 0.8, "total_steps": 40, "delta_t": 4, **kwargs}
    return opt, srigl.create_trainer(name, model, opt, **kwargs)


@pytest.mark.parametrize("name", ["static", "set", "rigl", "srigl"])
def test_nan_input_row_raises_naming_layer_and_step_and_leaves_state_intact(name):
    model = toy_mlp()
    opt, trainer = _trainer(model, name)
    for _ in train_steps(model, opt, trainer, 3, (20,), 10):
        pass
    masks = {k: v.clone() for k, v in trainer.masks.items()}
    x = torch.randn(16, 20)
    x[3, 7] = float("nan")  # one NaN input row
    loss = nn.functional.cross_entropy(model(x), torch.zeros(16, dtype=torch.long))
    with pytest.raises(NonFiniteGradientError, match=r"layer '4\.weight'.*step 4 holds"):
        loss.backward()
    # the hook raised before accumulating the gradient: nothing non-finite reached the trainer
    assert all(torch.isfinite(a).all() for a in trainer.state_dict()["accumulators"].values())
    assert trainer.step_count == 3
    assert all(torch.equal(trainer.masks[k], m) for k, m in masks.items())
    opt.zero_grad()
    # training goes on from a clean state: invariants hold after further (finite) steps
    for _ in train_steps(model, opt, trainer, 5, (20,), 10, seed=1):
        assert_invariants(trainer)
        for layer in trainer.layers.values():
            assert torch.isfinite(layer.param).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_masked_positions_are_exactly_zero_whatever_the_dense_gradient_holds(bad):
    """check_finite=False: an inf/NaN that a later gradient hook puts at a masked position is
    gone from the gradient, the weights and the momentum after every step (step() re-applies
    the masks)."""
    model = toy_mlp()
    opt, trainer = _trainer(model, "rigl", check_finite=False)
    mask = trainer.masks["0.weight"]
    off = (~mask).nonzero()[0].tolist()

    def poison(grad):
        grad = grad.clone()
        grad[off[0], off[1]] = bad
        return grad

    handle = model[0].weight.register_hook(poison)  # runs after the trainer's own hook
    for _ in train_steps(model, opt, trainer, 6, (20,), 10):  # an update at step 4
        g = model[0].weight.grad
        assert torch.isfinite(g).all()
        assert torch.count_nonzero(g[~trainer.masks["0.weight"]]) == 0
        assert_invariants(trainer)
    handle.remove()
    buf = opt.state[model[0].weight]["momentum_buffer"]
    assert torch.isfinite(buf).all() and torch.isfinite(model[0].weight).all()


def test_with_a_grad_scaler_the_scaler_skips_instead_of_an_error():
    model = toy_mlp()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    opt, trainer = _trainer(model, grad_scaler=scaler)
    x = torch.randn(16, 20)
    x[0, 0] = float("nan")
    scaler.scale(model(x).sum()).backward()  # no error: the scaler decides
    scaler.step(opt)
    assert trainer.step() is False and trainer.step_count == 0  # skipped, read from the scaler
    scaler.update()
    opt.zero_grad()
    assert_invariants(trainer)
