"""Invariant checks shared by the srigl tests (imported as a plain module)."""

from __future__ import annotations

import torch
from torch import nn


def toy_mlp(sizes=(20, 48, 32, 10), seed: int = 0) -> nn.Sequential:
    """A small ReLU MLP with Linear layers in -> ... -> out."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def train_steps(
    model, optimizer, trainer, steps: int, in_shape, n_out: int, seed: int = 0, device="cpu"
):
    """Run ``steps`` optimizer steps on random data; yield after each trainer.step()."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn((16, *in_shape), generator=gen).to(device)
        y = torch.randint(0, n_out, (16,), generator=gen).to(device)
        loss = nn.functional.cross_entropy(model(x).reshape(16, -1)[:, :n_out], y)
        loss.backward()
        optimizer.step()
        updated = trainer.step()
        yield updated
        optimizer.zero_grad()


def assert_masked_entries_zero(trainer) -> None:
    """Masked weights, gradients and every weight-shaped optimizer state are exactly 0."""
    for name, layer in trainer.layers.items():
        off = ~trainer.masks[name]
        p = layer.param
        assert torch.count_nonzero(p.detach()[off]) == 0, f"{name}: masked weight not zero"
        if p.grad is not None:
            assert torch.count_nonzero(p.grad[off]) == 0, f"{name}: masked grad not zero"
        for key, value in trainer.optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor) and value.shape == p.shape:
                assert torch.count_nonzero(value[off]) == 0, f"{name}: state {key} not zero"


def assert_constant_fan_in(trainer) -> None:
    """Every active neuron has k = floor(B / n_active) non-zeros and B - k * n_active of them
    k + 1, so nnz = B; or, with a fixed fan-in (``fan_in`` / ``n_m``), k = that fan-in and
    nnz = k * n_active."""
    for name, layer in trainer.layers.items():
        rows = trainer.masks[name].reshape(layer.out_features, -1).sum(1)
        active = rows > 0
        n_active = int(active.sum())
        k = layer.fixed_fan_in or layer.budget // n_active
        nnz = int(rows.sum())
        if layer.fixed_fan_in:
            assert torch.all(rows[active] == k), f"{name}: fan-in {rows.unique().tolist()} != {k}"
            assert nnz == k * n_active <= layer.budget, name
        else:
            extra = layer.budget - k * n_active
            plus = int((rows[active] == k + 1).sum())
            assert torch.all((rows[active] == k) | (rows[active] == k + 1)), (
                f"{name}: fan-in {rows.unique().tolist()} not {k} or {k + 1}"
            )
            assert plus == extra and nnz == layer.budget, (name, plus, extra, nnz)


def assert_n_m(trainer) -> None:
    """Every group of M consecutive inputs (flattened fan-in) of an active neuron holds exactly
    N non-zeros; an ablated neuron holds none."""
    for name, layer in trainer.layers.items():
        n, m = layer.n_m
        groups = trainer.masks[name].reshape(layer.out_features, -1, m).sum(2)
        active = groups.sum(1) > 0
        assert torch.all(groups[active] == n), f"{name}: {groups.unique().tolist()} per group"


def assert_unstructured_budget(trainer) -> None:
    """Every layer holds exactly its budget B_l of non-zeros."""
    for name, layer in trainer.layers.items():
        assert int(trainer.masks[name].sum()) == layer.budget, name


def assert_invariants(trainer) -> None:
    """All invariants of the trainer's kind (constant fan-in or unstructured)."""
    assert_masked_entries_zero(trainer)
    if trainer.constant_fan_in:
        assert_constant_fan_in(trainer)
        if trainer.n_m is not None:
            assert_n_m(trainer)
    else:
        assert_unstructured_budget(trainer)
