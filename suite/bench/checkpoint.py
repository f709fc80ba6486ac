"""The bench's name for the checkpoint loader, which lives in :mod:`suite.checkpointing` (one
package that training and the bench both import)."""

from __future__ import annotations

from suite.checkpointing.loader import CheckpointError, LoadedModel, load_for_bench

__all__ = ["CheckpointError", "LoadedModel", "load_for_bench"]
