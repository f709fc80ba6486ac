"""Fingerprints of a finished train run: is a rerun bitwise identical to a published run?

A train record carries ``metrics.hashes = {"state": ..., "metrics": ...}``: SHA-256 of the final
weights, buffers and masks (exact bytes), and of the final test metrics and training curves
(exact float values). Two runs with equal hashes ended in bitwise the same model and numbers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from suite.results import config_hash


def _update(h: Any, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
    if t.numel():
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())


def state_hash(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of ``model.state_dict()`` (every parameter and buffer, by name) and of the
    bool ``masks`` {param name: [out, ...]}, exact bytes in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        _update(h, f"state.{name}", tensor)
    for name, mask in sorted(masks.items()):
        _update(h, f"mask.{name}", mask.to(torch.bool))
    return h.hexdigest()


def metrics_hash(metrics: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of JSON-serialisable ``metrics`` (keys sorted, floats by their repr): the
    store's own :func:`suite.results.config_hash`, whole."""
    return config_hash(metrics, length=None)


def run_hashes(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    final: Mapping[str, float],
    curves: Mapping[str, list],
) -> dict[str, str]:
    """``{"state": state_hash, "metrics": metrics_hash}`` of a finished run: ``final`` holds the
    final test metrics (top1/top5 accuracy, test loss), ``curves`` the per-epoch curves."""
    return {
        "state": state_hash(model, masks),
        "metrics": metrics_hash({"final": dict(final), "curves": dict(curves)}),
    }
