"""Training checkpoints: one file per run, written atomically, loadable with weights_only=True.

A checkpoint is a dict with the keys of :data:`REQUIRED_KEYS`: ``model`` (state dict),
``optimizer``, ``masks`` ({param name: bool tensor}), ``trainer`` (the sparse trainer's state
dict), ``rng`` (torch, numpy as plain lists/ints, python), ``epoch`` (completed epochs) and
``config_yaml`` (the resolved config as YAML text), plus optional extras (``scheduler``,
``scaler``, ``history``). It lives at ``<checkpoint_dir>/<run_id>/checkpoint.pt``.
"""

from __future__ import annotations

import io
import os
import pickle
import random
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.results import atomic_write_bytes

REQUIRED_KEYS = ("model", "optimizer", "masks", "trainer", "rng", "epoch", "config_yaml")
FILENAME = "checkpoint.pt"


class CheckpointError(ValueError):
    """A checkpoint file is truncated, foreign or lacks keys; the message names the file."""


class CheckpointExistsError(CheckpointError):
    """A run would overwrite an existing checkpoint (``resume=false``, ``overwrite=false``)."""


def move_aside(path: str | os.PathLike) -> Path:
    """Rename an existing checkpoint to ``<name>.replaced-<UTC time>`` (never overwritten:
    a numbered suffix is added if that name exists); returns the new path."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        target = path.with_name(f"{path.name}.replaced-{stamp}-{n}")
        n += 1
    os.replace(path, target)
    return target


def checkpoint_path(checkpoint_dir: str | os.PathLike, run_id: str) -> Path:
    """Where the checkpoint of run ``run_id`` lives: ``<checkpoint_dir>/<run_id>/checkpoint.pt``."""
    return Path(checkpoint_dir) / run_id / FILENAME


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Serialise ``state`` with ``torch.save`` and write it atomically (temp file + rename).

    Raises:
        CheckpointError: ``state`` lacks one of :data:`REQUIRED_KEYS`.
    """
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint state lacks keys {missing}")
    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_torch_file(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a dict saved with ``torch.save`` using ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: the file is missing, truncated, not a torch file, holds objects other
            than tensors and plain containers, or is not a dict; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint file there")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (
        RuntimeError,
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        ValueError,
        KeyError,
        OSError,
    ) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable checkpoint (truncated or foreign file: {first})"
        ) from exc
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(state).__name__}")
    return state


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (untrusted input is safe).

    Raises:
        CheckpointError: the file is missing, truncated, not a torch checkpoint, holds
            objects other than tensors and plain containers, or lacks required keys; the
            message names the file.
    """
    path = Path(path)
    state = read_torch_file(path, map_location)
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: not a srigl-bench checkpoint, lacks keys {missing} "
            f"(found {sorted(map(str, state))})"
        )
    return state


# --------------------------------------------------------------------------- RNG state


def rng_state() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and python RNG states as tensors and plain lists/ints."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global RNG)
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "keys": [int(k) for k in keys],
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(py_version),
            "internal": [int(v) for v in py_internal],
            "gauss": None if py_gauss is None else float(py_gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 (the global RNG is what user code draws from)
        (
            npy["kind"],
            np.asarray(npy["keys"], dtype=np.uint32),
            npy["pos"],
            npy["has_gauss"],
            npy["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
