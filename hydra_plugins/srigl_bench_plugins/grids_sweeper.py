"""``hydra/sweeper=grids``: a multirun over the union of several Cartesian grids.

Hydra's basic sweeper runs one Cartesian product. A benchmark grid often is a union: every
sparse method at every sparsity, and the dense reference once per seed (it has no sparsity).
This sweeper takes ``hydra.sweeper.grids``, a list of grids written like the basic sweeper's
``params`` (key -> sweep string: ``"a,b"``, ``"range(5)"``), expands each, concatenates them
(dropping repeated jobs) and launches all jobs in one call, so a launcher sees the whole sweep
(one progress bar, one failure summary). Command-line arguments apply to every grid and win
over a grid's value of the same key::

    python -m suite.train -m hydra/sweeper=grids hydra/launcher=pool \
        'hydra.sweeper.grids=[{trainer:"rigl,srigl",sparsity:"0.9,0.95"},{trainer:dense,sparsity:0}]'
"""

# No `from __future__ import annotations`: Hydra loads plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


@dataclass
class GridsSweeperConf:
    """Config of ``hydra/sweeper=grids``."""

    _target_: str = "hydra_plugins.srigl_bench_plugins.grids_sweeper.GridsSweeper"
    max_batch_size: int | None = None  # jobs per launcher call (null: all at once)
    grids: list[dict[str, Any]] = field(default_factory=list)


ConfigStore.instance().store(
    group="hydra/sweeper", name="grids", node=GridsSweeperConf, provider="srigl-bench"
)


def expand_grids(
    grids: list[dict[str, Any]], arguments: list[str], parser: OverridesParser
) -> list[list[str]]:
    """Every job of the union of ``grids`` (with ``arguments`` applied to each), in order,
    each job once; a job is its list of ``key=value`` overrides."""
    jobs: list[list[str]] = []
    seen: set[tuple[str, ...]] = set()
    for grid in grids or [{}]:
        params = [f"{k}={v}" for k, v in grid.items()] + list(arguments)
        for job in BasicSweeper.split_arguments(parser.parse_overrides(params), None)[0]:
            key = tuple(job)
            if key not in seen:
                seen.add(key)
                jobs.append(job)
    return jobs


class GridsSweeper(Sweeper):
    """The union of ``grids`` (see the module docstring)."""

    def __init__(self, max_batch_size: int | None = None, grids: Any = None) -> None:
        if max_batch_size is not None and int(max_batch_size) < 1:
            raise ValueError(f"max_batch_size={max_batch_size} is invalid; allowed: null or >= 1")
        self.max_batch_size = max_batch_size
        plain = OmegaConf.to_container(grids) if OmegaConf.is_config(grids) else grids
        self.grids: list[dict[str, Any]] = [dict(g) for g in plain or []]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """Launch every job; raise the first failure after all jobs ran."""
        assert self.config is not None and self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        jobs = expand_grids(self.grids, arguments, parser)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        size = self.max_batch_size or max(1, len(jobs))
        returns: list[JobReturn] = []
        for start in range(0, len(jobs), size):
            batch = jobs[start : start + size]
            self.validate_batch_is_legal(batch)
            returns.extend(self.launcher.launch(batch, initial_job_idx=start))
        for r in returns:
            _ = r.return_value  # raises the first failed job's error (after the summary)
        return returns
