"""Mixed precision on CPU: fp16 with GradScaler (skipped steps) and bf16 autocast."""

from __future__ import annotations

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
