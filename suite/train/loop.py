"""One training epoch and one evaluation pass (the inner loops of ``suite.train``).

Order of one optimizer step (SPEC.md section 2): forward under autocast, backward (scaled with
fp16), optional gradient clipping (after unscaling), ``optimizer.step()`` (through the
scaler), ``scaler.update()``, ``trainer.step()`` (topology update on update steps), then the
lr schedule. With ``accumulate`` micro-batches per step, DDP synchronises only on the last.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from suite.train.cost import topk_correct
from suite.train.distributed import DistContext, all_reduce_sum

AMP_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops without a result record."""


def amp_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of config value ``amp`` (None for ``none``).

    Raises:
        ValueError: ``name`` is not one of none, bf16, fp16.
    """
    try:
        return AMP_DTYPES[name]
    except KeyError:
        raise ValueError(f"amp {name!r} is not supported; allowed: {sorted(AMP_DTYPES)}") from None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """An autocast context for ``dtype`` on ``device`` (a no-op context when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class StepParts:
    """What one optimizer step needs."""

    model: nn.Module  # possibly DDP-wrapped
    optimizer: torch.optim.Optimizer
    trainer: Any  # srigl trainer: .step() after optimizer.step()
    scheduler: Any
    criterion: nn.Module
    device: torch.device
    dist: DistContext
    amp: torch.dtype | None = None
    scaler: torch.amp.GradScaler | None = None
    accumulate: int = 1
    grad_clip: float | None = None


@dataclass
class EpochResult:
    """Mean training loss and accuracy of an epoch, its optimizer steps and their wall time."""

    loss: float
    accuracy: float
    steps: int
    seconds: float
    updates: int
    step_times: list[float] = field(default_factory=list)


def train_epoch(
    parts: StepParts,
    batches: Iterable,
    n_batches: int,
    epoch: int,
    global_step: int,
    max_steps: int | None = None,
    progress: Any = None,
) -> EpochResult:
    """Train over ``n_batches`` micro-batches ``(x [B, ...], y [B])`` of ``batches``.

    Args:
        epoch: 0-based epoch (for error messages); global_step: optimizer steps done before.
        max_steps: stop once ``global_step`` reaches it (None: no limit).
        progress: a tqdm bar to advance and annotate, or None.

    Raises:
        NonFiniteLossError: a micro-batch loss is NaN or inf (names epoch and step).
    """
    model, opt = parts.model, parts.optimizer
    model.train()
    loss_sum = correct = count = 0.0
    steps = updates = 0
    step_times: list[float] = []
    ddp = isinstance(model, nn.parallel.DistributedDataParallel)
    opt.zero_grad(set_to_none=True)
    t_epoch = time.perf_counter()
    t_step = t_epoch
    for i, (x, y) in enumerate(batches):
        if i >= n_batches:
            break
        x = x.to(parts.device, non_blocking=True)
        y = y.to(parts.device, non_blocking=True)
        group_start = (i // parts.accumulate) * parts.accumulate
        group = min(parts.accumulate, n_batches - group_start)
        last = i - group_start == group - 1
        sync = contextlib.nullcontext() if (last or not ddp) else model.no_sync()
        with sync:
            value, logits = _forward_backward(parts, x, y, group, (epoch, global_step + steps, i))
        loss_sum += value * len(y)
        correct += topk_correct(logits.detach().float(), y, (1,))[0]
        count += len(y)
        if not last:
            continue
        _optimizer_step(parts)
        updates += bool(parts.trainer.step())
        parts.scheduler.step()
        opt.zero_grad(set_to_none=True)
        steps += 1
        if parts.device.type == "cuda":
            torch.cuda.synchronize(parts.device)
        now = time.perf_counter()
        step_times.append(now - t_step)
        t_step = now
        if progress is not None:
            progress.update(1)
            progress.set_postfix(
                loss=f"{loss_sum / count:.4f}", acc=f"{100 * correct / count:.2f}", refresh=False
            )
        if max_steps is not None and global_step + steps >= max_steps:
            break
    totals = all_reduce_sum([loss_sum, correct, count], parts.dist)
    n = max(totals[2], 1.0)
    return EpochResult(
        loss=totals[0] / n,
        accuracy=100.0 * totals[1] / n,
        steps=steps,
        seconds=time.perf_counter() - t_epoch,
        updates=updates,
        step_times=step_times,
    )


def _forward_backward(
    parts: StepParts, x: torch.Tensor, y: torch.Tensor, group: int, where: tuple[int, int, int]
) -> tuple[float, torch.Tensor]:
    """Forward ``x`` [B, ...] and backward the loss against ``y`` [B] divided by ``group`` (the
    micro-batches of this optimizer step), scaled with fp16; returns (loss, logits [B, C]).

    Raises:
        NonFiniteLossError: the loss is NaN or infinite (``where``: epoch, steps done,
            micro-batch, for the message).
    """
    with autocast(parts.device, parts.amp):
        logits = parts.model(x)
        loss = parts.criterion(logits, y)
    value = float(loss.detach())
    if not math.isfinite(value):
        epoch, done, i = where
        raise NonFiniteLossError(
            f"training loss is {value} at epoch {epoch + 1}, optimizer step {done + 1} "
            f"(micro-batch {i}); stopping without a result record. Lower optimizer.lr, set "
            "training.grad_clip, or check the data"
        )
    scaled = loss / group
    (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
    return value, logits


def _optimizer_step(parts: StepParts) -> None:
    """Clip (after unscaling with fp16) and step the optimizer, through the scaler if any."""
    params = [p for g in parts.optimizer.param_groups for p in g["params"]]
    if parts.scaler is not None:
        if parts.grad_clip is not None:
            parts.scaler.unscale_(parts.optimizer)
            torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
        parts.scaler.step(parts.optimizer)
        parts.scaler.update()
        return
    if parts.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, parts.grad_clip)
    parts.optimizer.step()


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    n_batches: int,
    device: torch.device,
    dist: DistContext,
    amp: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy over ``n_batches`` batches
    ``(x [B, ...], y [B])``, summed over all ranks.

    Returns:
        {'top1_accuracy', 'top5_accuracy', 'test_loss', 'n'}.
    """
    was_training = model.training
    model.eval()
    loss_sum = top1 = top5 = count = 0.0
    for i, (x, y) in enumerate(batches):
        if i >= n_batches:
            break
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x)
        logits = logits.float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        c1, c5 = topk_correct(logits, y, (1, 5))
        top1 += c1
        top5 += c5
        count += len(y)
    model.train(was_training)
    loss_sum, top1, top5, count = all_reduce_sum([loss_sum, top1, top5, count], dist)
    n = max(count, 1.0)
    return {
        "top1_accuracy": 100.0 * top1 / n,
        "top5_accuracy": 100.0 * top5 / n,
        "test_loss": loss_sum / n,
        "n": int(count),
    }
