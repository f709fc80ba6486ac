"""Optional metric loggers (config key ``logger``): ``none`` and ``tensorboard`` (offline
event files under ``log_dir/<run_id>``; no account, nothing uploaded)."""

from __future__ import annotations

from pathlib import Path

from backends.registry import Registry

LOGGERS: Registry = Registry("logger")


class NullLogger:
    """Discards everything."""

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Record scalar ``metrics`` at ``step`` (here: nowhere)."""

    def close(self) -> None:
        """Flush and release resources."""


class TensorBoardLogger(NullLogger):
    """Writes scalars with ``torch.utils.tensorboard.SummaryWriter``."""

    def __init__(self, log_dir: str | Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Add one scalar per key at global ``step``."""
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        """Flush the event file."""
        self.writer.close()


@LOGGERS.register("none")
def _none(log_dir: str | Path) -> NullLogger:
    return NullLogger()


@LOGGERS.register("tensorboard")
def _tensorboard(log_dir: str | Path) -> NullLogger:
    return TensorBoardLogger(log_dir)


def create_logger(name: str, log_dir: str | Path) -> NullLogger:
    """Build logger ``name`` writing under ``log_dir`` (``UnknownNameError`` if unknown)."""
    return LOGGERS.create(name, log_dir)
