"""Up-front checks of a training config: every value, before any data is read or compute spent.

Keys and types are checked by the typed schema (:mod:`suite.schema`) while Hydra composes the
config; ``check_run_config(cfg)`` adds what types cannot say (ranges, writable output folders)
and raises ``ConfigError`` (a ValueError) naming the key, its value and what is allowed, e.g.
``training.grad_clip=-1 is invalid; allowed: a number > 0 or null``.
The trainer's options are checked by the library's own rules
(:func:`srigl.trainers.options.check_trainer_options`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from srigl.errors import require_real
from srigl.trainers.options import check_trainer_options
from suite.schema import TrainSettings


class ConfigError(ValueError):
    """The training config is inconsistent (e.g. a batch size that does not split over ranks)."""


def _typed(cfg: DictConfig) -> DictConfig:
    """``cfg`` checked against the typed schema (:mod:`suite.schema`): a config composed by
    Hydra already was; one built another way (``OmegaConf.create``) is checked here.

    Raises:
        ConfigError: a key the schema does not know or a value of the wrong type (one line).
    """
    try:
        return OmegaConf.merge(OmegaConf.structured(TrainSettings), cfg)
    except (ValidationError, ConfigKeyError) as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"{key}: {str(exc).splitlines()[0]}") from None


def _check(key: str, value: Any, allowed: str, ok: Callable[[Any], bool]) -> None:
    """A range the schema's types cannot say: ``ok(value)`` or ConfigError naming it."""
    if not ok(value):
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


def _at_least(key: str, value: int | None, minimum: int, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    allowed = f"an integer >= {minimum}" + (" or null" if nullable else "")
    _check(key, value, allowed, lambda v: v is not None and v >= minimum)


def _optimizer_number(key: str, value: Any, allowed: str, ok: Callable[[Any], bool]) -> None:
    """An optimizer option (an open config group, untyped): a finite number, then its range."""
    _check(key, require_real(key, value, allowed, error=ConfigError), allowed, ok)


#: seeds every RNG of a run takes (numpy's and scikit-learn's: 32-bit unsigned)
SEED_LIMIT = 2**32


def check_writable_folder(key: str, folder: str | os.PathLike) -> None:
    """Check that ``folder`` is, or can be made, a folder this process can write into.

    The nearest existing ancestor of ``folder`` must be a folder in which a file can be
    created (a probe file is made and removed there; nothing else is created).

    Raises:
        ConfigError: ``key=folder is not a writable folder: <why>; allowed: ...``.
    """
    path = Path(folder)
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    allowed = "a folder this process can write into, or one it can create"
    if not probe.is_dir():
        raise ConfigError(
            f"{key}={path} is not a writable folder: {probe} is a file; allowed: {allowed}"
        )
    try:
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "permission denied")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{key}={path} is not a writable folder: cannot create a file in {probe} "
            f"({exc.strerror or exc}); allowed: {allowed}"
        ) from None


def check_output_folders(cfg: DictConfig) -> None:
    """``results_dir`` (always), ``checkpoint_dir`` (with ``checkpoint=true``) and ``log_dir``
    (with a logger) must be writable folders: checked before training, not after it."""
    check_writable_folder("results_dir", cfg.results_dir)
    if cfg.get("checkpoint", True):
        check_writable_folder("checkpoint_dir", cfg.checkpoint_dir)
    if str(cfg.get("logger", "none")) != "none":
        check_writable_folder("log_dir", cfg.log_dir)


def check_run_config(cfg: DictConfig) -> None:
    """Check every value of a composed ``train.yaml`` that the run reads.

    Types and keys are the schema's (:mod:`suite.schema`); this adds the ranges, the output
    folders and the trainer's options.

    Raises:
        ConfigError: the first bad value (the message names its key and what is allowed).
        SparsityConfigError, UnknownNameError: a bad trainer option or name (ValueErrors).
    """
    cfg = _typed(cfg)
    t = cfg.training
    for key in ("epochs", "batch_size", "eval_batch_size", "accumulate_batches"):
        _at_least(f"training.{key}", t[key], 1)
    if t.grad_clip is not None:
        _check("training.grad_clip", t.grad_clip, "a number > 0 or null", lambda v: v > 0)
    _check("training.label_smoothing", t.label_smoothing, "0 <= value < 1", lambda v: 0 <= v < 1)
    for key in ("max_steps", "limit_batches", "threads"):
        _at_least(key, cfg[key], 1, nullable=True)
    _at_least("num_workers", cfg.num_workers, 0)
    _check("seed", cfg.seed, "an integer in [0, 2**32)", lambda v: 0 <= v < SEED_LIMIT)
    if cfg.resume and cfg.overwrite:
        raise ConfigError("resume=true and overwrite=true contradict; allowed: at most one")
    opt = cfg.optimizer
    _optimizer_number("optimizer.lr", opt.get("lr"), "a number > 0", lambda v: v > 0)
    if opt.get("weight_decay") is not None:
        _optimizer_number(
            "optimizer.weight_decay", opt.weight_decay, "a number >= 0", lambda v: v >= 0
        )
    if opt.get("momentum") is not None:
        _optimizer_number(
            "optimizer.momentum", opt.momentum, "0 <= value < 1", lambda v: 0 <= v < 1
        )
    check_output_folders(cfg)
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(options, dict)
    name = options.pop("name")
    options.pop("label", None)
    check_trainer_options(str(name), sparsity=cfg.sparsity, seed=cfg.seed, **options)
