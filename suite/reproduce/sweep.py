"""The reproduction's runs as command lines: the config, the train sweep (one Hydra multirun
through the ``grids`` sweeper) and the bench runs of a profile, and the checks that must pass
before any of them starts."""

from __future__ import annotations

import logging
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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


#: the keys of one entry of ``train.extra_grids`` (seeds are the profile's ``train.seeds``)
EXTRA_GRID_KEYS = ("experiments", "methods", "sparsities", "overrides")
#: the axes every grid sets itself: an extra grid's ``overrides`` may not set them
GRID_AXES = ("seed", "experiment", "trainer", "sparsity")


@dataclass(frozen=True)
class Grid:
    """One Cartesian grid of the sweep: ``experiments x methods x sparsities`` (dense once, at
    the reproduce config's ``dense_sparsity``) for every seed of the profile, each job with the
    grid's own ``overrides`` (``key -> value``, e.g. ``trainer.dense_first_layer -> "true"``)."""

    where: str
    experiments: tuple[str, ...]
    methods: tuple[str, ...]
    sparsities: tuple[Any, ...]
    overrides: tuple[tuple[str, str], ...] = ()

    @property
    def sparse(self) -> list[str]:
        """The grid's methods other than dense."""
        return [m for m in self.methods if m != DENSE]

    def jobs_per_seed(self) -> int:
        """How many jobs the grid runs for one seed."""
        per_experiment = len(self.sparse) * len(self.sparsities) + (DENSE in self.methods)
        return len(self.experiments) * per_experiment


def _override_value(name: Any, where: str, key: str, value: Any) -> str:
    """A grid override's value as its Hydra text; one value, never a sweep.

    Raises:
        ReproduceError: a list, mapping or null value, or a text with a comma (a sweep).
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str) and value and "," not in value:
        return value
    raise ReproduceError(
        f"profile {name!r}: {where}.overrides.{key}={value!r} is invalid; allowed: one "
        "number, true/false or a text without commas (a grid value is never a sweep)"
    )


def _extra_grid(name: Any, i: int, entry: Any) -> Grid:
    """Entry ``i`` of ``train.extra_grids`` as a :class:`Grid`.

    Raises:
        ReproduceError: naming the profile and the bad entry (not a mapping, an unknown key,
            an empty axis, missing sparsities, a bad override).
    """
    where = f"train.extra_grids[{i}]"
    if not isinstance(entry, Mapping):
        raise ReproduceError(
            f"profile {name!r}: {where}={entry!r} is not a mapping; allowed keys: "
            f"{', '.join(EXTRA_GRID_KEYS)}"
        )
    unknown = sorted(str(k) for k in entry if k not in EXTRA_GRID_KEYS)
    if unknown:
        raise ReproduceError(
            f"profile {name!r}: {where} has unknown key(s) {unknown}; allowed: "
            f"{', '.join(EXTRA_GRID_KEYS)} (seeds are train.seeds)"
        )
    axes = {}
    for axis in ("experiments", "methods", "sparsities"):
        values = entry.get(axis) or []
        if isinstance(values, (str, Mapping)) or not isinstance(values, Sequence):
            raise ReproduceError(
                f"profile {name!r}: {where}.{axis}={values!r} is not a list; give a list"
            )
        axes[axis] = tuple(values)
    overrides = entry.get("overrides") or {}
    if not isinstance(overrides, Mapping):
        raise ReproduceError(
            f"profile {name!r}: {where}.overrides={overrides!r} is not a mapping of "
            "config keys to values"
        )
    pairs = []
    for key, value in overrides.items():
        bare = str(key).lstrip("+~")
        if bare in GRID_AXES or not bare or "=" in bare or " " in bare:
            raise ReproduceError(
                f"profile {name!r}: {where}.overrides key {key!r} is invalid; allowed: a "
                f"config key other than the grid's axes {', '.join(GRID_AXES)}"
            )
        pairs.append((str(key), _override_value(name, where, str(key), value)))
    grid = Grid(where, axes["experiments"], axes["methods"], axes["sparsities"], tuple(pairs))
    _check_axes(name, grid)
    return grid


def _check_axes(name: Any, grid: Grid) -> None:
    """Refuse an empty axis of ``grid``, or no sparsity for its sparse methods."""
    for axis in ("experiments", "methods"):
        if not getattr(grid, axis):
            raise ReproduceError(
                f"profile {name!r}: {grid.where}.{axis} is empty; give at least one"
            )
    if grid.sparse and not grid.sparsities:
        raise ReproduceError(
            f"profile {name!r}: {grid.where}.sparsities is empty but methods {grid.sparse} need one"
        )


def _job_keys(grid: Grid, seeds: Sequence[Any], dense_sparsity: Any) -> set[tuple[Any, ...]]:
    """Every job of ``grid`` as a comparable key (seed, experiment, method, sparsity, overrides)."""
    keys = set()
    for seed in seeds:
        for exp in grid.experiments:
            for method in grid.methods:
                for sp in [dense_sparsity] if method == DENSE else grid.sparsities:
                    keys.add((str(seed), str(exp), str(method), float(sp), grid.overrides))
    return keys


def profile_grids(cfg: DictConfig) -> list[Grid]:
    """The profile's grids, checked: ``train`` itself, then every ``train.extra_grids`` entry.
    A profile of extra grids only leaves the main grid's experiments, methods and sparsities
    all empty (profile=nm); one of them empty alone is an error.

    Raises:
        ReproduceError: an empty axis, a bad extra grid, or an extra grid that repeats a job
            of an earlier grid (naming the profile and the entry).
    """
    train = cfg.profile.train
    name = cfg.profile.get("name")
    if not train.get("seeds"):
        raise ReproduceError(f"profile {name!r}: train.seeds is empty; give at least one")
    main = Grid(
        "train",
        tuple(train.get("experiments") or ()),
        tuple(train.get("methods") or ()),
        tuple(train.get("sparsities") or ()),
    )
    extra = train.get("extra_grids") or []
    if OmegaConf.is_config(extra):
        extra = OmegaConf.to_container(extra, resolve=True)
    if not isinstance(extra, list):
        raise ReproduceError(
            f"profile {name!r}: train.extra_grids={extra!r} is not a list of grids"
        )
    grids = [_extra_grid(name, i, entry) for i, entry in enumerate(extra)]
    if main.experiments or main.methods or main.sparsities or not grids:
        _check_axes(name, main)  # else no main grid: the profile is its extra grids (nm)
        grids.insert(0, main)
    seen: set[tuple[Any, ...]] = set()
    for grid in grids:
        keys = _job_keys(grid, list(train.seeds), cfg.dense_sparsity)
        repeated = keys & seen
        if repeated:
            _, exp, method, sp, _ = sorted(repeated)[0]
            raise ReproduceError(
                f"profile {name!r}: {grid.where} repeats {len(repeated)} job(s) of an earlier "
                f"grid (e.g. {exp} {method} sparsity={sp}); give each job once"
            )
        seen |= keys
    return grids


def sweep_grids(cfg: DictConfig) -> list[dict[str, str]]:
    """The profile's grids as the ``grids`` sweeper's list: per grid (``train``, then each
    ``train.extra_grids`` entry with its ``overrides``), the sparse methods at every sparsity,
    and dense once per seed (``sparsity=dense_sparsity``); seed first in each, so a stopped
    grid holds whole seeds.

    Raises:
        ReproduceError: a bad grid (see :func:`profile_grids`).
    """
    seeds = _sweep_value(cfg.profile.train.seeds)
    out = []
    for grid in profile_grids(cfg):
        common = {"seed": seeds, "experiment": _sweep_value(grid.experiments)}
        extra = dict(grid.overrides)
        if grid.sparse:
            out.append(
                {
                    **common,
                    "trainer": _sweep_value(grid.sparse),
                    "sparsity": _sweep_value(grid.sparsities),
                    **extra,
                }
            )
        if DENSE in grid.methods:
            out.append({**common, "trainer": DENSE, "sparsity": str(cfg.dense_sparsity), **extra})
    return out


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
    """How many train jobs the sweep has (every grid, extra grids included)."""
    per_seed = sum(grid.jobs_per_seed() for grid in profile_grids(cfg))
    return per_seed * len(cfg.profile.train.seeds)


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
