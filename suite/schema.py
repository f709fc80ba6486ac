"""Typed schemas of the Hydra configs (OmegaConf structured configs in Hydra's ConfigStore).

``train.yaml`` lists ``train_schema`` first in its defaults, so every value it, an experiment
or the command line sets is checked against :class:`TrainSettings` while Hydra composes: an
unknown key or a value of the wrong type (``training.batch_size=x``, ``resume=yes``) is a
Hydra error before any data is read or compute spent. The values themselves (defaults with
their comments) stay in ``train.yaml``: a field here holds the type only (``MISSING``), so
each default is written once. Ranges that a type cannot say (``epochs >= 1``) are checked by
:func:`suite.train.validate.check_run_config`.

The config groups (``dataset``, ``model``, ``trainer``, ``optimizer``, ``scheduler``) stay open
mappings: their members differ in keys, and their builders check their own options.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

SCHEMA_NAME = "train_schema"


@dataclass
class TrainingSettings:
    """``training:`` of train.yaml: the optimisation loop's sizes and regularisers."""

    epochs: int = MISSING
    batch_size: int = MISSING
    eval_batch_size: int = MISSING
    accumulate_batches: int = MISSING
    label_smoothing: float = MISSING
    grad_clip: float | None = MISSING


@dataclass
class TrainSettings:
    """The top level of train.yaml (see the file for each key's meaning and default)."""

    experiment: str = MISSING
    sparsity: float = MISSING
    seed: int = MISSING
    device: str = MISSING
    resume: bool = MISSING
    overwrite: bool = MISSING
    skip_existing: bool = MISSING
    results_dir: str = MISSING
    checkpoint_dir: str = MISSING
    log_dir: str = MISSING
    num_workers: int = MISSING
    threads: int | None = MISSING
    amp: str = MISSING
    logger: str = MISSING
    progress: Any = MISSING  # auto | true | false
    sync_batchnorm: bool = MISSING
    max_steps: int | None = MISSING
    limit_batches: int | None = MISSING
    checkpoint: bool = MISSING
    training: TrainingSettings = field(default_factory=TrainingSettings)
    dataset: dict[str, Any] = MISSING
    model: dict[str, Any] = MISSING
    trainer: dict[str, Any] = MISSING
    optimizer: dict[str, Any] = MISSING
    scheduler: dict[str, Any] = MISSING


def register() -> None:
    """Put the schemas into Hydra's ConfigStore (idempotent; done on import)."""
    ConfigStore.instance().store(name=SCHEMA_NAME, node=TrainSettings, provider="srigl-bench")


register()
