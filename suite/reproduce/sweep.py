"""The reproduction's runs as command lines: the config, the train sweep (one Hydra multirun
through the ``grids`` sweeper) and the bench runs of a profile, and the checks that must pass
before any of them starts."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from suite import config

log = logging.getLogger(__name__)

CONFIG_NAME = "reproduce"
DENSE = "dense"


class ReproduceError(RuntimeError):
    """Reproduce cannot start (missing data, no GPU where the profile needs one, bad grid,
    a store folder it did not make, records that may not be published)."""


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """The resolved reproduce config (``suite/conf/reproduce.yaml`` + ``overrides``)."""
    return config.compose(CONFIG_NAME, overrides, resolve=True)


def _sweep_value(values: Sequence[Any]) -> str:
    """A grid axis as a Hydra sweep string: ``[0.8, 0.9] -> "0.8,0.9"``."""
    return ",".join(str(v) for v in values)


def sweep_grids(cfg: DictConfig) -> list[dict[str, str]]:
    """The profile's grid as the ``grids`` sweeper's list: the sparse methods at every
    sparsity, and dense once per seed (``sparsity=dense_sparsity``); seed first, so a stopped
    sweep holds whole seeds.

    Raises:
        ReproduceError: an empty grid axis (naming it and the profile).
    """
    grid = cfg.profile.train
    name = cfg.profile.get("name")
    for axis in ("experiments", "methods", "seeds"):
        if not grid.get(axis):
            raise ReproduceError(f"profile {name!r}: train.{axis} is empty; give at least one")
    sparse = [m for m in grid.methods if m != DENSE]
    if sparse and not grid.get("sparsities"):
        raise ReproduceError(
            f"profile {name!r}: train.sparsities is empty but methods {sparse} need one"
        )
    common = {"seed": _sweep_value(grid.seeds), "experiment": _sweep_value(grid.experiments)}
    grids = []
    if sparse:
        grids.append(
            {**common, "trainer": _sweep_value(sparse), "sparsity": _sweep_value(grid.sparsities)}
        )
    if DENSE in grid.methods:
        grids.append({**common, "trainer": DENSE, "sparsity": str(cfg.dense_sparsity)})
    return grids


def grids_override(grids: Sequence[Mapping[str, str]]) -> str:
    """``hydra.sweeper.grids=[{seed:"0,1",...},...]`` (values quoted for Hydra's grammar)."""
    items = ["{" + ",".join(f'{k}:"{v}"' for k, v in g.items()) + "}" for g in grids]
    return "hydra.sweeper.grids=[" + ",".join(items) + "]"


def train_overrides(cfg: DictConfig) -> list[str]:
    """The overrides every job of the sweep gets (store, checkpoints, resume, run length)."""
    out = [
        f"results_dir={cfg.store_dir}",
        f"checkpoint_dir={cfg.checkpoint_dir}",
        f"resume={'true' if cfg.resume else 'false'}",
        # a fresh reproduction starts over: a job's earlier checkpoint is moved aside (without
        # resume or overwrite, suite.train refuses to overwrite it)
        f"overwrite={'false' if cfg.resume else 'true'}",
        "skip_existing=true",
    ]
    if cfg.profile.train.get("epochs") is not None:
        out.append(f"{cfg.epochs_key}={cfg.profile.train.epochs}")
    return out + list(cfg.train_overrides)


def sweep_command(cfg: DictConfig) -> list[str]:
    """The command line of the sweep: ``python -m suite.train -m`` with the launcher."""
    cmd = [
        sys.executable,
        "-m",
        "suite.train",
        "-m",
        f"hydra/launcher={cfg.launcher}",
        "hydra/sweeper=grids",
        grids_override(sweep_grids(cfg)),
        f"hydra.sweep.dir={cfg.sweep_dir}",
    ]
    if cfg.launcher == "pool":
        threads = cfg.threads_per_worker
        cmd += [
            f"hydra.launcher.workers={int(cfg.workers)}",
            f"hydra.launcher.threads_per_worker={'null' if threads is None else int(threads)}",
        ]
    return cmd + list(cfg.launcher_overrides) + train_overrides(cfg)


def expected_jobs(cfg: DictConfig) -> int:
    """How many train jobs the sweep has."""
    grid = cfg.profile.train
    sparse = [m for m in grid.methods if m != DENSE]
    per_seed = len(grid.experiments) * (len(sparse) * len(grid.sparsities or []))
    per_seed += len(grid.experiments) * (DENSE in grid.methods)
    return per_seed * len(grid.seeds)


def bench_runs(cfg: DictConfig) -> list[list[str]]:
    """The bench command lines (``suite.bench`` overrides) of the profile, in order."""
    runs = cfg.bench.runs.get(cfg.profile.name)
    if runs is None:
        runs = [[f"profile={cfg.profile.name}"]]
    return [list(r) for r in runs]


def bench_command(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """One bench run's command line, writing into the store."""
    return [
        sys.executable,
        "-m",
        "suite.bench",
        *overrides,
        f"results_dir={cfg.store_dir}",
        "progress=false",
    ]


def shell_line(cmd: Sequence[str]) -> str:
    return "python " + " ".join(shlex.quote(a) for a in cmd[1:])


def check_can_start(cfg: DictConfig) -> None:
    """Fail before any compute when the profile needs a GPU that is not there, or when the
    data of an experiment is missing (the data set's own message says where it looked).

    Raises:
        ReproduceError: with the reason.
    """
    if cfg.require_gpu:
        import torch

        if not torch.cuda.is_available():
            raise ReproduceError(
                f"profile {cfg.profile.name!r} needs a CUDA GPU (require_gpu=true) and there is "
                "none here; run it on a GPU machine, or pass require_gpu=false to train on CPU"
            )
    from suite import train
    from suite.data import DatasetNotFoundError, create_dataset

    extra = [
        o
        for o in train_overrides(cfg)
        if not o.startswith(("resume=", "skip_existing=", "overwrite="))
    ]
    for experiment in cfg.profile.train.experiments:
        tcfg = train.compose([f"experiment={experiment}", *extra])
        dataset = OmegaConf.to_container(tcfg.dataset, resolve=True)
        name = dataset.pop("name")
        try:
            create_dataset(name, seed=tcfg.seed, **dataset)
        except DatasetNotFoundError as exc:
            raise ReproduceError(
                f"experiment {experiment!r} cannot start, nothing was run: {exc}"
            ) from exc
