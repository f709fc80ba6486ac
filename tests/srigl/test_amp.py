"""Mixed precision on CPU: fp16 with GradScaler (skipped steps) and bf16 autocast."""

from __future__ import annotations

import pytest
import torch
from sparse_checks import assert_invariants, toy_mlp
from torch import nn

import srigl


def _batch(gen):
    return torch.randn(16, 20, generator=gen), torch.randint(0, 10, (16,), generator=gen)


def test_fp16_scaler_skipped_step_does_not_advance_trainer_nor_touch_accumulator():
    model = toy_mlp()
    poison = {"on": False}
    seen = []  # (unscaled dense gradient, scale) of every backward, as the trainer sees it

    def before_trainer(grad):
        if poison["on"]:
            grad = grad.clone()
            grad[0, 0] = float("inf")
        seen.append(grad.detach().clone())
        return grad

    model[0].weight.register_hook(before_trainer)  # runs before the trainer's own hook
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer = srigl.create_trainer("srigl", model, opt, sparsity=0.8, total_steps=40, delta_t=5,
                                   grad_accumulation_n=3, grad_scaler=scaler)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    scales, flags = [], []
    for i in range(1, 8):
        poison["on"] = i == 4  # the 4th iteration (would be step 4, inside the window 3..5)
        x, y = _batch(gen)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scales.append(scaler.get_scale())
        scaler.scale(loss).backward()
        acc_before = {n: a.clone() for n, a in trainer.state_dict()["accumulators"].items()}
        scaler.step(opt)
        scaler.update()
        flags.append(trainer.step())
        opt.zero_grad()
        if i == 4:
            assert scaler.get_scale() < scales[-1], "the scaler did not skip the poisoned step"
            assert trainer.step_count == 3
            after = trainer.state_dict()["accumulators"]
            assert set(after) == set(acc_before)
            assert all(torch.equal(after[n], acc_before[n]) for n in after)
            assert all(torch.isfinite(a).all() for a in after.values())
        if i == 5:  # trainer step 4: window holds steps 3 and 4 (iterations 3 and 5)
            expected = (seen[2] / scales[2] + seen[4] / scales[4]) / 3
            acc = trainer.state_dict()["accumulators"]["0.weight"]
            torch.testing.assert_close(acc, expected, rtol=1e-5, atol=1e-7)
        assert_invariants(trainer)
    # the update comes at trainer step 5 = iteration 6, one late because of the skipped step
    assert flags == [False, False, False, False, False, True, False]
    assert trainer.history[0]["step"] == 5


def test_bf16_autocast_keeps_every_invariant():
    model = toy_mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    trainer = srigl.create_trainer("srigl", model, opt, sparsity=0.8, total_steps=40, delta_t=3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        x, y = _batch(gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        trainer.step()
        opt.zero_grad()
        assert_invariants(trainer)
    assert trainer.stats()["updates"] == 3


def test_disabled_scaler_behaves_like_no_scaler():
    model = toy_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    trainer = srigl.create_trainer("rigl", model, opt, sparsity=0.8, total_steps=20, delta_t=2,
                                   grad_scaler=scaler)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    for _ in range(4):
        x, y = _batch(gen)
        scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
        scaler.step(opt)
        scaler.update()
        trainer.step()
        opt.zero_grad()
    assert trainer.step_count == 4 and trainer.stats()["updates"] == 2


def _poisoned_run(order: str, poison_at: int = 4, iterations: int = 7):
    """fp16 + GradScaler, an inf gradient at iteration ``poison_at``; trainer.step() called
    'after_update' (scaler.step, scaler.update, trainer.step) or 'before_update'."""
    model = toy_mlp()
    seen = []

    def before_trainer(grad):
        if len(seen) + 1 == poison_at:
            grad = grad.clone()
            grad[0, 0] = float("inf")
        seen.append(grad.detach().clone())
        return grad

    model[0].weight.register_hook(before_trainer)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer = srigl.create_trainer("rigl", model, opt, sparsity=0.8, total_steps=40, delta_t=5,
                                   grad_accumulation_n=3, grad_scaler=scaler)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    flags, scales, accs = [], [], []
    for _ in range(iterations):
        x, y = _batch(gen)
        with torch.autocast("cpu", dtype=torch.float16):
            loss = nn.functional.cross_entropy(model(x), y)
        scales.append(scaler.get_scale())
        scaler.scale(loss).backward()
        scaler.step(opt)
        if order == "before_update":
            flags.append(trainer.step())
            scaler.update()
        else:
            scaler.update()
            flags.append(trainer.step())
        accs.append({n: a.clone() for n, a in trainer.state_dict()["accumulators"].items()})
        opt.zero_grad()
        assert_invariants(trainer)
    return trainer, flags, seen, scales, accs


@pytest.mark.parametrize("order", ["after_update", "before_update"])
def test_skipped_step_is_read_from_the_scaler_in_either_order(order):
    trainer, flags, seen, scales, accs = _poisoned_run(order)
    # iteration 4 was skipped: the update comes one iteration late (trainer step 5 = iteration 6)
    assert flags == [False, False, False, False, False, True, False]
    assert trainer.step_count == 6
    # the window of the update (trainer steps 3, 4, 5 = iterations 3, 5, 6) averages exactly
    # the three gradients committed, unscaled, never the skipped one
    window = accs[4]["0.weight"]  # after iteration 5: steps 3 and 4, each divided by 3
    expected = (seen[2] / scales[2] + seen[4] / scales[4]) / 3
    torch.testing.assert_close(window, expected, rtol=1e-5, atol=1e-7)
    assert all(torch.isfinite(a).all() for acc in accs for a in acc.values())


def test_a_manual_scale_change_before_trainer_step_is_an_order_error():
    model = toy_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12)
    trainer = srigl.create_trainer("rigl", model, opt, sparsity=0.8, total_steps=40, delta_t=5,
                                   grad_scaler=scaler)  # fmt: skip
    x, y = _batch(torch.Generator().manual_seed(0))
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update(new_scale=1000.0)  # neither backoff (0.5) nor growth (2.0)
    with pytest.raises(srigl.errors.GradScalerOrderError, match=r"4096 to 1000.*before "
                                                               r"scaler.update"):  # fmt: skip
        trainer.step()
    # the right order works with a manual scale too
    scaler.scale(nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    assert trainer.step() is False and trainer.step_count == 1
    scaler.update(new_scale=77.0)


def test_the_window_average_divides_by_the_steps_actually_committed():
    """Read mid-window (2 of grad_accumulation_n=3 steps), the dense gradient is their mean."""
    model = toy_mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: gradients comparable
    trainer = srigl.create_trainer("rigl", model, opt, sparsity=0.8, total_steps=40, delta_t=5,
                                   grad_accumulation_n=3)  # fmt: skip
    gen = torch.Generator().manual_seed(0)
    grads = []
    for _ in range(4):  # steps 1..4; the window of the update at 5 is steps 3, 4, 5
        x, y = _batch(gen)
        nn.functional.cross_entropy(model(x), y).backward()
        grads.append(model[0].weight.grad.clone())
        opt.step()
        trainer.step()
        opt.zero_grad()
    state = trainer.state_dict()
    assert state["accumulated_steps"] == 2
    dense = trainer.dense_gradients()["0.weight"]
    # the hook saw the dense gradients; grads[] holds the masked ones: compare where active
    m = trainer.masks["0.weight"]
    torch.testing.assert_close(dense[m], ((grads[2] + grads[3]) / 2)[m])
    assert trainer.dense_gradients()["0.weight"].equal(dense)  # reading does not change it
    # a resumed trainer keeps the count
    trainer.close()
    model2 = toy_mlp()
    other = srigl.create_trainer("rigl", model2, torch.optim.SGD(model2.parameters(), lr=0.0),
                                 sparsity=0.8, total_steps=40, delta_t=5,
                                 grad_accumulation_n=3)  # fmt: skip
    other.load_state_dict(state)
    assert other.dense_gradients()["0.weight"].equal(dense)
