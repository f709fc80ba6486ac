"""Training: ``python -m suite.train`` (Hydra app in :mod:`suite.train.app`).

Modules: ``app`` (entry point, run ids, the training run), ``loop`` (epochs, evaluation, AMP),
``optim`` (optimizers, lr schedules), ``loggers`` (TensorBoard / none), ``distributed``
(process-group set-up from torchrun or SLURM), ``cost`` (model cost: parameters, FLOPs,
bytes). Checkpoint files and the checkpoint-to-model loader are :mod:`suite.checkpointing`
(shared with the bench).

``from suite.train import compose, run`` keeps working: the public names of ``app`` are
re-exported lazily, so importing a sibling module (e.g. ``suite.train.optim``) does not
import Hydra and the whole training stack.
"""

from __future__ import annotations

from suite import lazy_exports

__getattr__ = lazy_exports(
    __name__,
    "suite.train.app",
    (
        "CONF_DIR",
        "ConfigError",
        "compose",
        "group_options",
        "load_trained",
        "main",
        "run",
        "run_id",
        "plain_config",
        "RUN_ID_EXCLUDED",
    ),
)
