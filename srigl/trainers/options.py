"""Checking a trainer's options before the model or data exist (a config read by the harness).

The checks themselves are :class:`~srigl.trainers.config.SparseConfig`'s and the trainer
class's (``SparseTrainer.resolve_config``); this module looks the trainer up by name.
"""

from __future__ import annotations

from typing import Any

from srigl.trainers import TRAINERS
from srigl.trainers.config import SparseConfig


def check_trainer_options(name: str, **options: Any) -> SparseConfig:
    """Check trainer ``name``'s keyword options; return its full config.

    Options not given take the trainer's defaults. Used by the harness to refuse a bad config
    before any data is loaded or compute spent.

    Raises:
        UnknownNameError: no trainer ``name``. SparsityConfigError: an unknown option, or a
            value of the wrong type or range (the message names it).
    """
    return TRAINERS.get(name).resolve_config(options=options)
