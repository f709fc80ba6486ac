"""How long one SRigL topology update takes on torchvision ResNet-50 vs one training step.

Slow; run ``python -m pytest tests/srigl/test_update_speed.py -m slow -s`` or
``PYTHONPATH=. python tests/srigl/test_update_speed.py [batch]`` to print the timings.
"""

from __future__ import annotations

import time

import pytest
import torch
from sparse_checks import assert_invariants
from torch import nn


def measure(batch: int = 32, threads: int = 2) -> dict[str, float]:
    """Seconds of one training step (fwd+bwd+SGD step, batch x 3x224x224) and of one SRigL
    update (ERK, 90%) on torchvision ResNet-50, CPU, ``threads`` threads."""
    from torchvision.models import resnet50

    import srigl

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = resnet50()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = srigl.create_trainer("srigl", model, opt, sparsity=0.9, distribution="erk",
                                   total_steps=100, delta_t=2)  # fmt: skip
    x = torch.randn(batch, 3, 224, 224)
    y = torch.randint(0, 1000, (batch,))
    times = {}
    for step in (1, 2):
        start = time.perf_counter()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        mid = time.perf_counter()
        updated = trainer.step()
        end = time.perf_counter()
        opt.zero_grad()
        assert updated == (step == 2)
        key = "update" if updated else "plain"
        times[f"train_step_{key}_s"] = mid - start
        times[f"trainer_step_{key}_s"] = end - mid
    assert_invariants(trainer)
    return times


@pytest.mark.slow
def test_one_srigl_update_on_resnet50_is_vectorised_and_reported():
    times = measure(batch=8)
    print(times)
    # no hard-coded speed: the update must only not dwarf a small training step
    assert times["trainer_step_update_s"] < 10 * times["train_step_update_s"]


if __name__ == "__main__":
    import sys

    batch = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    for k, v in measure(batch).items():
        print(f"{k:26s} {v:8.3f}")
