"""Fixtures that drive the real ``suite.train`` entry point with a shrunk config."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from omegaconf import DictConfig

from suite.train import compose


@pytest.fixture
def train_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """``train_cfg(*overrides)``: the composed train.yaml writing only under ``tmp_path``."""

    def make(*overrides: str, subdir: str = "") -> DictConfig:
        root = tmp_path / subdir if subdir else tmp_path
        return compose(
            [
                f"results_dir={root / 'runs'}",
                f"checkpoint_dir={root / 'checkpoints'}",
                f"log_dir={root / 'logs'}",
                "progress=false",
                "device=cpu",
                "threads=1",  # the test machine's 2 cores are shared: no OpenMP contention
                *overrides,
            ]
        )

    return make


def shrink_digits(epochs: int = 2, batches: int = 6) -> list[str]:
    """Overrides that make a digits run take well under a second."""
    return [
        f"training.epochs={epochs}",
        f"limit_batches={batches}",
        "training.batch_size=32",
        "trainer.delta_t=2",
    ]


@pytest.fixture(scope="session")
def shrink() -> Callable[..., Sequence[str]]:
    """``shrink(epochs=2, batches=6)``: overrides for a fast digits run (see shrink_digits)."""
    return shrink_digits
