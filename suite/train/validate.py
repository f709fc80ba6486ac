"""Up-front checks of a training config: every value, before any data is read or compute spent.

``check_run_config(cfg)`` raises ``ConfigError`` (a ValueError) naming the key, its value and
what is allowed, e.g. ``training.grad_clip=-1 is invalid; allowed: a number > 0 or null``.
The trainer's options are checked by the library's own rules
(:func:`srigl.trainers.options.check_trainer_options`).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from srigl.errors import require_int, require_real
from srigl.trainers.options import check_trainer_options


class ConfigError(ValueError):
    """The training config is inconsistent (e.g. a batch size that does not split over ranks)."""


def _number(key: str, value: Any, allowed: str, ok) -> None:
    if not ok(require_real(key, value, allowed, error=ConfigError)):
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


def _integer(key: str, value: Any, minimum: int, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    allowed = f"an integer >= {minimum}" + (" or null" if nullable else "")
    if require_int(key, value, allowed, error=ConfigError) < minimum:
        raise ConfigError(f"{key}={value!r} is invalid; allowed: {allowed}")


#: seeds every RNG of a run takes (numpy's and scikit-learn's: 32-bit unsigned)
SEED_LIMIT = 2**32


def _seed(value: Any) -> None:
    allowed = "an integer in [0, 2**32)"
    if not 0 <= require_int("seed", value, allowed, error=ConfigError) < SEED_LIMIT:
        raise ConfigError(f"seed={value!r} is invalid; allowed: {allowed}")


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

    Raises:
        ConfigError: the first bad value (the message names its key and what is allowed).
        SparsityConfigError, UnknownNameError: a bad trainer option or name (ValueErrors).
    """
    t = cfg.training
    for key in ("epochs", "batch_size", "eval_batch_size", "accumulate_batches"):
        _integer(f"training.{key}", t.get(key), 1)
    if t.get("grad_clip") is not None:
        _number("training.grad_clip", t.grad_clip, "a number > 0 or null", lambda v: v > 0)
    _number(
        "training.label_smoothing",
        t.get("label_smoothing", 0.0),
        "0 <= value < 1",
        lambda v: 0 <= v < 1,
    )
    _integer("max_steps", cfg.get("max_steps"), 1, nullable=True)
    _integer("limit_batches", cfg.get("limit_batches"), 1, nullable=True)
    _integer("threads", cfg.get("threads"), 1, nullable=True)
    _integer("num_workers", cfg.get("num_workers", 0), 0)
    _seed(cfg.get("seed"))
    for key in ("resume", "overwrite", "checkpoint", "skip_existing", "sync_batchnorm"):
        value = cfg.get(key, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is not a bool; allowed: true or false")
    if cfg.get("resume") and cfg.get("overwrite"):
        raise ConfigError("resume=true and overwrite=true contradict; allowed: at most one")
    opt = cfg.optimizer
    _number("optimizer.lr", opt.get("lr"), "a number > 0", lambda v: v > 0)
    if opt.get("weight_decay") is not None:
        _number("optimizer.weight_decay", opt.weight_decay, "a number >= 0", lambda v: v >= 0)
    if opt.get("momentum") is not None:
        _number("optimizer.momentum", opt.momentum, "0 <= value < 1", lambda v: 0 <= v < 1)
    check_output_folders(cfg)
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(options, dict)
    name = options.pop("name")
    options.pop("label", None)
    check_trainer_options(str(name), sparsity=cfg.sparsity, seed=cfg.seed, **options)
