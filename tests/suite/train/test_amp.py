"""Mixed precision through ``suite.train`` on CPU: the ``amp`` flag reaches the sparse trainer.

- ``amp=fp16``: the loop's ``torch.amp.GradScaler("cpu")`` is the trainer's ``grad_scaler``; an
  inf gradient injected into one backward makes the scaler skip that optimizer step, and the
  trainer neither counts it nor lets it into its dense-gradient accumulator, so the topology
  update comes one iteration later.
- ``amp=bf16``: every SRigL invariant holds after every topology update.

(The library-level versions of these checks are in tests/srigl/test_amp.py; the file name
differs from it because pytest needs unique test file names across folders.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch

import srigl
import suite.train.app as train_module
from suite.train import run

POISONED_ITERATION = 4  # inside the dense-gradient window (steps 3, 4) of the update at step 4


def _instrument(
    monkeypatch, poison_at: int | None = None, on_update: Callable[[Any], None] | None = None
) -> list[dict[str, Any]]:
    """Record, after every ``trainer.step()`` call of the next run, the trainer's step count,
    whether it updated, its accumulators and first-layer weights, and call ``on_update(trainer)``
    after every topology update; optionally make the gradient of the first Linear weight inf
    in the ``poison_at``-th backward (1-based)."""
    log: list[dict[str, Any]] = []
    create_model, create_trainer = train_module.create_model, srigl.create_trainer

    def poisoned_model(*args, **kwargs):
        model = create_model(*args, **kwargs)
        first = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
        calls = {"n": 0}

        def hook(grad: torch.Tensor) -> torch.Tensor:  # runs before the trainer's hook
            calls["n"] += 1
            if calls["n"] == poison_at:
                grad = grad.clone()
                grad[0, 0] = float("inf")
            return grad

        first.weight.register_hook(hook)
        return model

    def recording_trainer(*args, **kwargs):
        trainer = create_trainer(*args, **kwargs)
        original = trainer.step
        first = next(iter(trainer.layers.values())).param

        def step() -> bool:
            before = {n: a.clone() for n, a in trainer.state_dict()["accumulators"].items()}
            updated = original()
            if updated and on_update is not None:
                on_update(trainer)
            log.append(
                {
                    "trainer": trainer,
                    "step_count": trainer.step_count,
                    "updated": updated,
                    "acc_before": before,
                    "acc_after": trainer.state_dict()["accumulators"],
                    "weight": first.detach().clone(),
                    "scaler": kwargs.get("grad_scaler"),
                }
            )
            return updated

        trainer.step = step
        return trainer

    monkeypatch.setattr(train_module, "create_model", poisoned_model)
    monkeypatch.setattr(srigl, "create_trainer", recording_trainer)
    return log


def _overrides(amp: str) -> list[str]:
    return [
        "experiment=digits_mlp",
        "trainer=srigl",
        f"amp={amp}",
        "training.epochs=1",
        "limit_batches=8",
        "training.batch_size=32",
        "trainer.delta_t=4",
        "trainer.grad_accumulation_n=2",
    ]


def test_fp16_run_hands_its_cpu_grad_scaler_to_the_trainer(train_cfg, monkeypatch):
    log = _instrument(monkeypatch)
    run(train_cfg(*_overrides("fp16")))
    scaler = log[0]["scaler"]
    assert isinstance(scaler, torch.amp.GradScaler) and scaler.is_enabled()
    assert scaler._device == "cpu"
    assert [e["step_count"] for e in log] == list(range(1, 9))
    assert [i + 1 for i, e in enumerate(log) if e["updated"]] == [4]


def test_fp16_inf_gradient_skips_the_step_without_advancing_the_trainer(train_cfg, monkeypatch):
    log = _instrument(monkeypatch, poison_at=POISONED_ITERATION)
    record = run(train_cfg(*_overrides("fp16")))
    skipped, before = log[POISONED_ITERATION - 1], log[POISONED_ITERATION - 2]
    # the trainer did not count the skipped step ...
    assert [e["step_count"] for e in log] == [1, 2, 3, 3, 4, 5, 6, 7]
    # ... nor let its gradient into the accumulator, which holds step 3's finite gradient
    assert skipped["acc_before"].keys() == skipped["acc_after"].keys() != set()
    for name, acc in skipped["acc_after"].items():
        assert torch.equal(acc, skipped["acc_before"][name]), name
        assert torch.isfinite(acc).all(), name
    # the scaler skipped the optimizer step: the weights did not move
    assert torch.equal(skipped["weight"], before["weight"])
    assert not torch.equal(log[POISONED_ITERATION]["weight"], skipped["weight"])
    # the update at trainer step 4 comes one iteration late, from finite gradients
    assert [i + 1 for i, e in enumerate(log) if e["updated"]] == [POISONED_ITERATION + 1]
    assert [a["step"] for a in record["metrics"]["ablation"]] == [4]
    assert record["metrics"]["steps"] == 8  # optimizer iterations of the loop, skipped included
    trainer = log[-1]["trainer"]
    for name, mask in trainer.masks.items():
        assert torch.isfinite(trainer.layers[name].param).all(), name
        assert int(mask.sum()) > 0


def _assert_srigl_invariants(trainer) -> None:
    """Every active neuron has exactly k' = floor(B / n_active) non-zeros, ablated neurons none,
    B - n_active < nnz <= B, and the weights are zero outside the mask."""
    for name, layer in trainer.layers.items():
        mask = trainer.masks[name].reshape(layer.out_features, -1)
        per_row = mask.sum(1)
        active = per_row > 0
        n_active = int(active.sum())
        assert n_active > 0, name
        k = layer.budget // n_active
        assert bool((per_row[active] == k).all()), (name, per_row.unique())
        nnz = int(per_row.sum())
        assert layer.budget - n_active < nnz <= layer.budget, name
        weight = layer.param.detach().reshape(layer.out_features, -1)
        assert not bool(weight[~mask].any()), name
        assert layer.param.dtype == torch.float32  # autocast leaves the master weights alone


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_srigl_invariants_hold_after_every_update_under_autocast(train_cfg, monkeypatch, amp):
    checked: list[int] = []

    def check(trainer) -> None:
        _assert_srigl_invariants(trainer)
        checked.append(trainer.step_count)

    log = _instrument(monkeypatch, on_update=check)
    overrides = [*_overrides(amp), "trainer.delta_t=2", "trainer.grad_accumulation_n=1"]
    run(train_cfg(*overrides))
    assert checked == [2, 4]  # t_end = floor(0.75 * 8) = 6
    trainer = log[-1]["trainer"]
    _assert_srigl_invariants(trainer)
    first = trainer.history[0]["layers"]
    assert first and all(info["nnz"] > 0 for info in first.values())
