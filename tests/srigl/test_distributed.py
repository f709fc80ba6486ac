"""Two gloo processes: masks stay bitwise identical across ranks and equal a 1-process run."""

from __future__ import annotations

import contextlib
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import srigl

STEPS = 13
GLOBAL_BATCH = 16


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(12, 40), nn.ReLU(), nn.Linear(40, 24), nn.ReLU(),
                         nn.Linear(24, 5)).double()  # fmt: skip


def _data():
    gen = torch.Generator().manual_seed(1)
    return [
        (torch.randn(GLOBAL_BATCH, 12, generator=gen, dtype=torch.float64),
         torch.randint(0, 5, (GLOBAL_BATCH,), generator=gen))
        for _ in range(STEPS)
    ]  # fmt: skip


#: the topology options the DDP test runs with: the plain budget, N:M and a fixed fan-in
TOPOLOGIES = {"sparsity": {"sparsity": 0.8}, "n_m": {"n_m": (2, 4)}, "fan_in": {"fan_in": 6}}


def _train(model, rank: int, world: int, record, topology: str = "sparsity"):
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    trainer = srigl.create_trainer("srigl", model, opt, total_steps=20, delta_t=3,
                                   grad_accumulation_n=2, gamma_sal=0.5, seed=4,
                                   sparse_init=False, **TOPOLOGIES[topology])  # fmt: skip
    record(0, trainer)
    per_rank = GLOBAL_BATCH // world
    for step, (x, y) in enumerate(_data(), start=1):
        sl = slice(rank * per_rank, (rank + 1) * per_rank)
        nn.functional.cross_entropy(model(x[sl]), y[sl]).backward()
        opt.step()
        if trainer.step():
            record(step, trainer)
        opt.zero_grad()
    return trainer


@contextlib.contextmanager
def _gloo_ddp(rank: int, world: int, port: int):
    """A gloo process group for this rank and the DDP-wrapped model: yields (model, ddp)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        model = _model()
        yield model, nn.parallel.DistributedDataParallel(model)
    finally:
        dist.destroy_process_group()


def _worker(rank: int, world: int, port: int, out: str, topology: str) -> None:
    with _gloo_ddp(rank, world, port) as (model, ddp):
        with torch.no_grad():  # ranks now differ in their weights; only the trainer re-syncs
            torch.manual_seed(100 + rank)
            for layer in (model[0], model[2], model[4]):
                layer.weight.add_(torch.randn_like(layer.weight) * rank)
        snapshots = {}

        def record(step, trainer):
            snapshots[step] = {n: m.clone() for n, m in trainer.masks.items()}

        _train(ddp, rank, world, record, topology)
        torch.save({"masks": snapshots, "weights": model.state_dict()}, f"{out}/rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
@pytest.mark.parametrize("topology", sorted(TOPOLOGIES))
def test_two_gloo_ranks_keep_identical_masks_equal_to_a_single_process_run(tmp_path, topology):
    world = 2
    args = (world, _free_port(), str(tmp_path), topology)
    mp.spawn(_worker, args=args, nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]

    single = {}

    def record(step, trainer):
        single[step] = {n: m.clone() for n, m in trainer.masks.items()}

    model = _model()
    _train(model, 0, 1, record, topology)

    assert sorted(single) == [0, 3, 6, 9, 12]
    for step, masks in single.items():
        for name, mask in masks.items():
            for r in ranks:
                assert torch.equal(r["masks"][step][name], mask), (step, name)
    for name, w in model.state_dict().items():
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name
        torch.testing.assert_close(ranks[0]["weights"][name], w, rtol=1e-9, atol=1e-10)


def _set_worker(rank: int, world: int, port: int, out: str) -> None:
    """SET under DDP with a different seed on each rank (seed + rank, a common habit)."""
    with _gloo_ddp(rank, world, port) as (model, ddp):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        trainer = srigl.create_trainer("set", ddp, opt, sparsity=0.8, total_steps=20, delta_t=3,
                                       seed=10 + rank)  # fmt: skip
        snapshots = {0: {n: m.clone() for n, m in trainer.masks.items()}}
        per_rank = GLOBAL_BATCH // world
        for step, (x, y) in enumerate(_data()[:10], start=1):
            sl = slice(rank * per_rank, (rank + 1) * per_rank)
            nn.functional.cross_entropy(ddp(x[sl]), y[sl]).backward()
            opt.step()
            if trainer.step():
                snapshots[step] = {n: m.clone() for n, m in trainer.masks.items()}
            opt.zero_grad()
        torch.save({"masks": snapshots, "seed": trainer.seed}, f"{out}/set{rank}.pt")


@pytest.mark.distributed
def test_set_keeps_identical_masks_when_each_rank_passes_another_seed(tmp_path):
    world = 2
    mp.spawn(_set_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world, join=True)
    ranks = [torch.load(tmp_path / f"set{r}.pt", weights_only=True) for r in range(world)]
    assert [r["seed"] for r in ranks] == [10, 10]  # rank 0's seed everywhere
    assert sorted(ranks[0]["masks"]) == [0, 3, 6, 9]
    for step, masks in ranks[0]["masks"].items():
        for name, mask in masks.items():
            assert torch.equal(ranks[1]["masks"][step][name], mask), (step, name)
