"""Up-front checks of a training config: every value, before any data is read or compute spent.

``check_run_config(cfg)`` raises ``ConfigError`` (a ValueError) naming the key, its value and
what is allowed, e.g. ``training.grad_clip=-1 is invalid; allowed: a number > 0 or null``.
The trainer's options are checked by the library's own rules
(:func:`srigl.trainers.options.check_trainer_options`).
"""

from __future__ import annotations

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
    _integer("seed", cfg.get("seed"), -(2**63))
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
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    assert isinstance(options, dict)
    name = options.pop("name")
    options.pop("label", None)
    check_trainer_options(str(name), sparsity=cfg.sparsity, seed=cfg.seed, **options)
