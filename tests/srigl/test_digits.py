"""A short real training on scikit-learn digits: RigL and SRigL at 90% sparsity learn."""

from __future__ import annotations

import math

import pytest
import torch
from sparse_checks import assert_invariants
from torch import nn

import srigl


def digits_split():
    """Standardised digits: (x_train [N, 64], y_train [N], x_test, y_test), fixed split."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    n_test = 360
    mean, std = x[n_test:].mean(0), x[n_test:].std(0) + 1e-3
    x = (x - mean) / std
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 10),
    )  # fmt: skip


MODELS = {"mlp": mlp, "cnn": cnn}


@pytest.fixture
def one_thread():
    """Small models train faster on one thread, and much faster on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_digits(trainer_name: str, model_name: str, sparsity: float = 0.9, epochs: int = 10,
                 seed: int = 0) -> tuple[float, object]:  # fmt: skip
    """Train on digits; return (test accuracy, trainer)."""
    x_tr, y_tr, x_te, y_te = digits_split()
    torch.manual_seed(seed)
    model = MODELS[model_name]()
    batch = 64
    steps_per_epoch = math.ceil(len(x_tr) / batch)
    total = epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    trainer = srigl.create_trainer(
        trainer_name, model, opt, sparsity=sparsity, distribution="erk", total_steps=total,
        delta_t=10, alpha=0.3, seed=seed,
    )  # fmt: skip
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x_tr), generator=gen)
        for i in range(0, len(x_tr), batch):
            idx = perm[i : i + batch]
            nn.functional.cross_entropy(model(x_tr[idx]), y_tr[idx]).backward()
            opt.step()
            trainer.step()
            opt.zero_grad()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x_te).argmax(1) == y_te).float().mean().item()
    return acc, trainer


@pytest.mark.parametrize("model_name", ["mlp", "cnn"])
@pytest.mark.parametrize("trainer_name", ["rigl", "srigl"])
def test_sparse_training_on_digits_reaches_90_percent_at_90_percent_sparsity(
    trainer_name, model_name, one_thread
):
    acc, trainer = train_digits(trainer_name, model_name)
    assert acc >= 0.90, f"{trainer_name}/{model_name}: test accuracy {acc:.3f}"
    assert_invariants(trainer)
    stats = trainer.stats()
    assert stats["updates"] > 5
    # the shared constant fan-in allocation is neuron-granular: d * N within the largest layer's
    # neuron count (srigl/budgets.py)
    total = sum(p.numel for p in srigl.masks.eligible_parameters(trainer.model))
    slack = max(layer.out_features for layer in trainer.layers.values()) / total
    assert stats["global_density"] <= 0.1 + slack


if __name__ == "__main__":  # the closing-note numbers: python tests/srigl/test_digits.py
    for model_name in MODELS:
        for name in ("dense", "rigl", "srigl"):
            accs = [train_digits(name, model_name, seed=s)[0] for s in range(3)]
            print(f"{model_name:4s} {name:6s} " + " ".join(f"{a:.4f}" for a in accs))
