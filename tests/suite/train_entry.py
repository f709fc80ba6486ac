"""Run the real ``suite.train`` Hydra app as a launcher starts it, with two test instruments.

Used by the scale-out tests as ``python tests/suite/train_entry.py <overrides>`` (one process)
or ``python -m torch.distributed.run --nproc_per_node=2 tests/suite/train_entry.py ...``
(DDP). Everything else is ``suite.train.main`` unchanged. The instruments, switched on by
environment variables:

- ``SRIGL_TEST_DTYPE=float64``: ``torch.set_default_dtype`` before anything is built, so the
  model and the ``synthetic`` data set are float64 (top-k near-ties then cannot differ between
  a 1-process and a 2-process run through rounding of the gradient average).
- ``SRIGL_TEST_DUMP_DIR=<folder>``: every rank writes ``rank<r>_step<s>.pt`` holding
  ``{"masks": {name: bool tensor}, "weights": {name: tensor}}`` of the sparse layers, once at
  the first ``trainer.step()`` call (``s = 0``: the initial, broadcast topology) and after
  every topology update (``s`` = the trainer's step).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _dump(trainer, folder: Path, step: int) -> None:
    """Write the masks and weights of ``trainer``'s sparse layers for this rank and step."""
    state = {
        "masks": {n: m.detach().cpu().clone() for n, m in trainer.masks.items()},
        "weights": {n: layer.param.detach().cpu().clone() for n, layer in trainer.layers.items()},
    }
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(state, folder / f"rank{_rank()}_step{step}.pt")


def install_mask_dump(folder: str | os.PathLike) -> None:
    """Wrap ``SparseTrainer.step`` so that it dumps the topology as the module docstring says."""
    from srigl.trainers.base import SparseTrainer

    original = SparseTrainer.step
    out = Path(folder)

    def step(self) -> bool:
        if not getattr(self, "_test_dumped_initial", False):
            self._test_dumped_initial = True
            _dump(self, out, 0)
        updated = original(self)
        if updated:
            _dump(self, out, self.step_count)
        return updated

    SparseTrainer.step = step


def main() -> None:
    """Apply the instruments that the environment asks for, then run ``suite.train.main``."""
    dtype = os.environ.get("SRIGL_TEST_DTYPE")
    if dtype:
        torch.set_default_dtype(getattr(torch, dtype))
    folder = os.environ.get("SRIGL_TEST_DUMP_DIR")
    if folder:
        install_mask_dump(folder)
    from suite.train import main as train_main

    train_main()


if __name__ == "__main__":
    main()
