"""``python -m suite.train``: train one model with one sparse-training method, write a record.

::

    python -m suite.train experiment=digits_mlp trainer=srigl sparsity=0.9 seed=1
    python -m suite.train -m experiment=digits_mlp trainer=dense,rigl,srigl sparsity=0.8,0.9
    torchrun --nproc_per_node=4 -m suite.train experiment=imagenet_resnet50 trainer=srigl

In process (``suite.reproduce``, tests)::

    from suite.train import compose, run
    record = run(compose(["experiment=digits_cnn", "trainer=rigl", "sparsity=0.95"]))

Flow: config -> data set and model (registries) -> optimizer, lr schedule, sparse trainer
(``srigl.create_trainer``) -> epochs of training + evaluation, a checkpoint after each epoch
under ``checkpoint_dir/<run_id>/`` -> metrics -> a ``train`` result record in
``results_dir`` (rank 0 only). The run id is a hash of the config without the keys of
:data:`RUN_ID_EXCLUDED` (paths, device, resume, logging), so ``resume=true`` finds the
checkpoint of the same experiment and continues it to the same result.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from srigl.masks import unwrap_model
from suite import checkpointing as ckpt
from suite import config
from suite.checkpointing import load_trained  # noqa: F401 (re-exported by suite.train)
from suite.cli import one_line_errors
from suite.data import create_dataset, make_loader
from suite.models import create_model
from suite.results import (  # noqa: F401 (RUN_ID_EXCLUDED: re-exported by suite.train)
    RUN_ID_EXCLUDED,
    InvalidRecordError,
    ResultStore,
    make_record,
)
from suite.results import run_id as record_run_id
from suite.runtime import set_threads
from suite.train import distributed
from suite.train.cost import inference_flops, model_bytes, param_counts
from suite.train.fingerprint import run_hashes
from suite.train.loggers import create_logger
from suite.train.loop import StepParts, amp_dtype, evaluate, train_epoch
from suite.train.optim import create_optimizer, create_scheduler
from suite.train.validate import ConfigError, check_run_config

CONF_DIR = config.CONF_DIR
#: an epoch callback: ``callback(epoch, curves)`` after the epoch's checkpoint is written
EpochCallback = Callable[[int, dict[str, list]], None]


log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- config


def compose(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``suite/conf/train.yaml`` with Hydra ``overrides`` (e.g. ``["trainer=rigl"]``)
    through the suite's one compose helper (:func:`suite.config.compose`)."""
    return config.compose("train", overrides)


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain dicts and lists (the record's ``config``)."""
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def run_id(cfg: DictConfig | dict[str, Any]) -> str:
    """Hash of the experiment-defining config (``RUN_ID_EXCLUDED`` keys left out)."""
    return record_run_id(plain_config(cfg) if isinstance(cfg, DictConfig) else dict(cfg))


def group_options(section: DictConfig, drop: Sequence[str] = ("name",)) -> dict[str, Any]:
    """A config group's values as keyword arguments (``name`` and the keys in ``drop`` out)."""
    opts = OmegaConf.to_container(section, resolve=True)
    return {k: v for k, v in opts.items() if k not in drop}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seed the global RNG user code draws from)
    torch.manual_seed(seed)


def _show_progress(setting: Any, is_main: bool) -> bool:
    if not is_main:
        return False
    if setting == "auto":
        return sys.stderr.isatty()
    return bool(setting)


def _per_rank(batch: int, world: int, what: str) -> int:
    if batch % world:
        raise ConfigError(
            f"{what}={batch} does not split over {world} ranks; use a multiple of {world}"
        )
    return batch // world


# --------------------------------------------------------------------------- entry points


def run(cfg: DictConfig, callbacks: Sequence[EpochCallback] = ()) -> dict[str, Any]:
    """Train as ``cfg`` says and write the result record (rank 0); return the record.

    Args:
        cfg: a composed ``train.yaml`` (see :func:`compose`).
        callbacks: called as ``cb(epoch, curves)`` after each epoch's checkpoint (1-based
            epoch); an exception raised there interrupts the run (tests use this).

    Returns:
        The ``train`` result record (``suite.results`` schema), on every rank.

    Raises:
        NonFiniteLossError: the loss became NaN/inf (no record is written).
        ConfigError, UnknownNameError, DatasetNotFoundError: bad config or missing data.
    """
    ctx = distributed.setup(str(cfg.device))
    threads = torch.get_num_threads()
    if cfg.get("threads") is not None:
        set_threads(int(cfg.threads))  # torch and numba, the suite's one setter
    try:
        return _run(cfg, ctx, list(callbacks))
    finally:
        set_threads(threads)
        ctx.close()


def _run(
    cfg: DictConfig, ctx: distributed.DistContext, callbacks: list[EpochCallback]
) -> dict[str, Any]:
    check_run_config(cfg)  # every value, before any data or compute
    config = plain_config(cfg)
    rid = run_id(config)
    existing = _existing_record(cfg, rid)
    if existing is not None:
        return existing
    ckpt_file = ckpt.checkpoint_path(cfg.checkpoint_dir, rid)
    _keep_existing_checkpoint(cfg, ckpt_file, ctx)
    seed_everything(int(cfg.seed))
    run = _build(cfg, ctx)
    state = _State()
    if cfg.resume and ckpt_file.is_file():
        state = _restore(ckpt_file, run.bare_model, run.parts)
    state.input_shape, state.num_classes = run.input_shape, run.num_classes
    _train_epochs(cfg, ctx, run, state, ckpt_file, callbacks, rid)
    parts = run.parts
    final = state.final_test or _evaluate(run, ctx)
    metrics = _metrics(final, state, run.bare_model, parts.trainer, run.input_shape, ctx.device)
    if ctx.is_main and cfg.checkpoint and ckpt_file.is_file():
        metrics["checkpoint"] = str(ckpt_file)
    record = make_record("train", config, metrics, run_id=rid)
    if ctx.is_main:
        ResultStore(cfg.results_dir).write(record)
    ctx.barrier()
    return record


@dataclass
class _Run:
    """What one run is built from: the model (DDP-wrapped when distributed, and bare), the
    loaders and how many of their batches an epoch uses, and the step's parts."""

    model: nn.Module
    bare_model: nn.Module
    train_loader: Any
    test_loader: Any
    n_train: int
    n_test: int
    steps_per_epoch: int
    epochs: int
    parts: StepParts
    input_shape: tuple[int, ...]
    num_classes: int


def _loaders(cfg: DictConfig, ctx: distributed.DistContext, data: Any) -> tuple[Any, Any]:
    """The training loader (this rank's shard, shuffled by seed) and the evaluation loader."""
    tcfg, seed = cfg.training, int(cfg.seed)
    common = {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "num_workers": int(cfg.num_workers),
        "pin_memory": ctx.device.type == "cuda",
    }
    batch = _per_rank(int(tcfg.batch_size), ctx.world_size, "training.batch_size")
    train = make_loader(data.train, batch, train=True, seed=seed, **common)
    eval_batch = max(1, int(tcfg.eval_batch_size) // ctx.world_size)
    return train, make_loader(data.test, eval_batch, train=False, **common)


def _optimization(
    cfg: DictConfig, model: nn.Module, device: torch.device, steps_per_epoch: int, total_steps: int
) -> tuple[Any, Any, Any, torch.dtype | None, Any]:
    """``(optimizer, lr scheduler, sparse trainer, AMP dtype, grad scaler)`` of ``cfg``."""
    import srigl

    seed = int(cfg.seed)
    optimizer = create_optimizer(str(cfg.optimizer.name), model, **group_options(cfg.optimizer))
    scheduler = create_scheduler(
        str(cfg.scheduler.name),
        optimizer,
        steps_per_epoch,
        total_steps,
        **group_options(cfg.scheduler),
    )
    amp = amp_dtype(str(cfg.amp))
    scaler = torch.amp.GradScaler(device.type) if amp is torch.float16 else None
    trainer = srigl.create_trainer(
        str(cfg.trainer.name),
        model,
        optimizer,
        sparsity=float(cfg.sparsity),
        total_steps=total_steps,
        grad_scaler=scaler,
        seed=seed,
        **group_options(cfg.trainer, drop=("name", "label")),
    )
    return optimizer, scheduler, trainer, amp, scaler


def _build(cfg: DictConfig, ctx: distributed.DistContext) -> _Run:
    """Data set, model, loaders, optimizer, schedule and sparse trainer of ``cfg``."""
    seed, device, tcfg = int(cfg.seed), ctx.device, cfg.training
    data = create_dataset(str(cfg.dataset.name), seed=seed, **group_options(cfg.dataset))
    model = create_model(
        str(cfg.model.name), data.num_classes, data.input_shape, **group_options(cfg.model)
    ).to(device)
    if ctx.distributed and cfg.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_loader, test_loader = _loaders(cfg, ctx, data)
    limit = None if cfg.limit_batches is None else int(cfg.limit_batches)  # checked up front
    n_train = len(train_loader) if limit is None else min(limit, len(train_loader))
    n_test = len(test_loader) if limit is None else min(limit, len(test_loader))
    accumulate = int(tcfg.accumulate_batches)
    steps_per_epoch = -(-n_train // accumulate)
    total_steps = max(1, int(tcfg.epochs) * steps_per_epoch)
    optimizer, scheduler, trainer, amp, scaler = _optimization(
        cfg, model, device, steps_per_epoch, total_steps
    )
    bare = model
    if ctx.distributed:
        ids = [device.index] if device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    parts = StepParts(
        model=model,
        optimizer=optimizer,
        trainer=trainer,
        scheduler=scheduler,
        criterion=nn.CrossEntropyLoss(label_smoothing=float(tcfg.label_smoothing)),
        device=device,
        dist=ctx,
        amp=amp,
        scaler=scaler,
        accumulate=accumulate,
        grad_clip=None if tcfg.grad_clip is None else float(tcfg.grad_clip),
    )
    return _Run(
        model=model,
        bare_model=unwrap_model(bare),
        train_loader=train_loader,
        test_loader=test_loader,
        n_train=n_train,
        n_test=n_test,
        steps_per_epoch=steps_per_epoch,
        epochs=int(tcfg.epochs),
        parts=parts,
        input_shape=tuple(data.input_shape),
        num_classes=int(data.num_classes),
    )


def _evaluate(run: _Run, ctx: distributed.DistContext) -> dict[str, float]:
    return evaluate(run.model, run.test_loader, run.n_test, ctx.device, ctx, run.parts.amp)


def _train_epochs(
    cfg: DictConfig,
    ctx: distributed.DistContext,
    run: _Run,
    state: _State,
    ckpt_file: Path,
    callbacks: list[EpochCallback],
    rid: str,
) -> None:
    """The epochs from ``state.epoch`` on: train, evaluate, log, checkpoint, call back."""
    logger = create_logger(str(cfg.logger), Path(cfg.log_dir) / rid) if ctx.is_main else None
    show = _show_progress(cfg.progress, ctx.is_main)
    max_steps = None if cfg.max_steps is None else int(cfg.max_steps)
    try:
        for epoch in range(state.epoch, run.epochs):
            if max_steps is not None and state.global_step >= max_steps:
                break
            run.train_loader.sampler.set_epoch(epoch)
            bar = _bar(show, epoch, run.epochs, run.steps_per_epoch)
            result = train_epoch(
                run.parts, run.train_loader, run.n_train, epoch, state.global_step, max_steps, bar
            )
            state.global_step += result.steps
            state.step_times.extend(result.step_times)
            test = _evaluate(run, ctx)
            density = float(run.parts.trainer.stats()["global_density"])
            state.add_epoch(epoch + 1, result, test, density)
            if bar is not None:
                bar.set_postfix(
                    loss=f"{result.loss:.4f}",
                    acc=f"{test['top1_accuracy']:.2f}",
                    density=f"{density:.4f}",
                )
                bar.close()
            if logger is not None:
                logger.log(state.last_scalars(), state.global_step)
            state.epoch = epoch + 1
            if ctx.is_main and cfg.checkpoint:
                _save(ckpt_file, cfg, run.bare_model, run.parts, state)
            ctx.barrier()
            for callback in callbacks:
                callback(epoch + 1, state.curves)
    finally:
        if logger is not None:
            logger.close()


def _keep_existing_checkpoint(cfg: DictConfig, path: Path, ctx: distributed.DistContext) -> None:
    """Never overwrite a run's checkpoint by accident: without ``resume=true`` an existing one
    stops the run before any compute, unless ``overwrite=true`` (which moves it aside first)."""
    if cfg.resume or not cfg.checkpoint or not path.is_file():
        return
    if not cfg.get("overwrite", False):
        raise ckpt.CheckpointExistsError(
            f"{path} exists (an earlier run of this config); pass resume=true to continue it, "
            "or overwrite=true to start over (the old file is moved aside)"
        )
    if ctx.is_main:
        moved = ckpt.move_aside(path)
        log.warning(f"overwrite=true: moved the existing checkpoint to {moved}")
    ctx.barrier()


def _bar(show: bool, epoch: int, epochs: int, steps: int):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=steps, desc=f"epoch {epoch + 1}/{epochs}", leave=True, dynamic_ncols=True)


# --------------------------------------------------------------------------- run state


class _State:
    """What a run accumulates across epochs (and a checkpoint carries for resuming)."""

    def __init__(self) -> None:
        self.input_shape: tuple[int, ...] = ()
        self.num_classes = 0
        self.epoch = 0
        self.global_step = 0
        self.step_times: list[float] = []
        self.curves: dict[str, list] = {
            "epoch": [],
            "train_loss": [],
            "train_accuracy": [],
            "test_accuracy": [],
            "test_top5_accuracy": [],
            "test_loss": [],
            "density": [],
        }

    def add_epoch(self, epoch: int, result, test: dict[str, float], density: float) -> None:
        c = self.curves
        c["epoch"].append(epoch)
        c["train_loss"].append(result.loss)
        c["train_accuracy"].append(result.accuracy)
        c["test_accuracy"].append(test["top1_accuracy"])
        c["test_top5_accuracy"].append(test["top5_accuracy"])
        c["test_loss"].append(test["test_loss"])
        c["density"].append(density)

    def last_scalars(self) -> dict[str, float]:
        return {f"curves/{k}": v[-1] for k, v in self.curves.items() if k != "epoch" and v}

    @property
    def final_test(self) -> dict[str, float] | None:
        c = self.curves
        if not c["epoch"]:
            return None
        return {
            "top1_accuracy": c["test_accuracy"][-1],
            "top5_accuracy": c["test_top5_accuracy"][-1],
            "test_loss": c["test_loss"][-1],
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "global_step": self.global_step,
            "step_times": list(self.step_times),
            "curves": {k: list(v) for k, v in self.curves.items()},
        }

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any]) -> _State:
        out = cls()
        out.epoch = int(state["epoch"])
        history = state.get("history", {})
        out.global_step = int(history.get("global_step", 0))
        out.step_times = list(history.get("step_times", []))
        out.curves.update({k: list(v) for k, v in history.get("curves", {}).items()})
        return out


def _save(path: Path, cfg: DictConfig, model: nn.Module, parts: StepParts, state: _State) -> None:
    trainer, scaler = parts.trainer, parts.scaler
    ckpt.save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": parts.optimizer.state_dict(),
            "masks": {n: m.detach().cpu().clone() for n, m in trainer.masks.items()},
            "trainer": trainer.state_dict(),
            "rng": ckpt.rng_state(),
            "epoch": state.epoch,
            "config_yaml": OmegaConf.to_yaml(cfg, resolve=True),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "history": state.to_dict(),
            "input_shape": list(state.input_shape),
            "num_classes": state.num_classes,
        },
    )


def _restore(path: Path, model: nn.Module, parts: StepParts) -> _State:
    data = ckpt.load_checkpoint(path, map_location=next(model.parameters()).device)
    model.load_state_dict(data["model"])
    parts.optimizer.load_state_dict(data["optimizer"])
    parts.trainer.load_state_dict(data["trainer"])
    if data.get("scheduler") is not None:
        parts.scheduler.load_state_dict(data["scheduler"])
    if parts.scaler is not None and data.get("scaler") is not None:
        parts.scaler.load_state_dict(data["scaler"])
    ckpt.set_rng_state(data["rng"])
    return _State.from_checkpoint(data)


# --------------------------------------------------------------------------- metrics


def _existing_record(cfg: DictConfig, rid: str) -> dict[str, Any] | None:
    """The stored record of run ``rid`` in ``results_dir`` when ``skip_existing`` (else None).

    Raises:
        InvalidRecordError: a file of that run id is there but is not a valid record (named).
    """
    if not cfg.get("skip_existing"):
        return None
    store = ResultStore(cfg.results_dir)
    path = store.path_for({"kind": "train", "run_id": rid})
    if not path.is_file():
        return None
    record = store.load(path)  # an invalid file raises, naming it: never silently retrained
    log.info(f"skip: {path} holds run {rid} already (skip_existing=false trains it again)")
    return record


def _metrics(final, state: _State, model, trainer, input_shape, device) -> dict[str, Any]:
    stats = trainer.stats()
    masks = {n: m.detach() for n, m in trainer.masks.items()}
    c = state.curves
    top1, top5 = float(final["top1_accuracy"]), float(final["top5_accuracy"])
    last = {k: float(final[k]) for k in ("top1_accuracy", "top5_accuracy", "test_loss")}
    return {
        "hashes": run_hashes(model, masks, last, c),
        "top1_accuracy": top1,
        "top5_accuracy": top5,
        "top1_error": 100.0 - top1,
        "top5_error": 100.0 - top5,
        "test_loss": float(final["test_loss"]),
        "curves": {k: c[k] for k in ("epoch", "train_loss", "test_accuracy", "density")}
        | {k: c[k] for k in ("train_accuracy", "test_loss")},
        "ablation": [
            {"step": int(h["step"]), "n_ablated": int(h.get("n_ablated", 0))}
            for h in trainer.history
        ],
        "layers": {
            name: {k: info.get(k) for k in ("fan_in", "density", "n_active", "n_ablated")}
            for name, info in stats["layers"].items()
        },
        "global_density": float(stats["global_density"]),
        "params": param_counts(model, masks),
        "flops": inference_flops(model, masks, input_shape, device),
        "model_bytes": model_bytes(model, masks),
        "step_time_s": float(np.mean(state.step_times)) if state.step_times else None,
        "epochs": state.epoch,
        "steps": state.global_step,
        "updates": int(stats.get("updates", len(trainer.history))),
    }


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=config.VERSION_BASE)
@one_line_errors
def main(cfg: DictConfig) -> float:
    """The Hydra app: train, print a one-line summary (rank 0), return the top-1 error."""
    record = run(cfg)
    m = record["metrics"]
    if int(os.environ.get("RANK", "0")) == 0:
        # the app's result line on stdout (also under torchrun, where Hydra's job log is not)
        print(
            f"{cfg.experiment} {cfg.trainer.label} sparsity={cfg.sparsity} seed={cfg.seed}: "
            f"top-1 {m['top1_accuracy']:.2f}% density {m['global_density']:.4f} "
            f"steps {m['steps']} run {record['run_id']}"
        )
    return float(m["top1_error"])


if __name__ == "__main__":
    main()
