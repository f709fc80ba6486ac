"""Checkpoints: the one place that writes, reads and rebuilds models from checkpoint files.

Modules: ``files`` (atomic writes, the safe ``weights_only`` reader, required keys, RNG state)
and ``loader`` (a trained model and its masks from a file: :func:`load_for_bench`,
:func:`load_trained`). Training and the bench both import this package, and it imports
neither of them, so ``suite.train`` and ``suite.bench`` do not import each other.
"""

from __future__ import annotations

from suite.checkpointing.files import (
    FILENAME,
    REQUIRED_KEYS,
    CheckpointError,
    CheckpointExistsError,
    checkpoint_path,
    load_checkpoint,
    move_aside,
    read_torch_file,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from suite.checkpointing.loader import LoadedModel, load_for_bench, load_trained

__all__ = [
    "FILENAME",
    "REQUIRED_KEYS",
    "CheckpointError",
    "CheckpointExistsError",
    "LoadedModel",
    "checkpoint_path",
    "load_checkpoint",
    "load_for_bench",
    "load_trained",
    "move_aside",
    "read_torch_file",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]
