"""The one error policy of every suite entry point (``python -m suite.train|bench|report|...``).

A config, data or checkpoint error (the exceptions of :data:`USER_ERRORS`: the project's
``ConfigError``, ``CheckpointError``, ``DatasetNotFoundError``, ``SparsityConfigError``,
``UnknownNameError``... are all among them) is printed as one line, ``ConfigError: <message>``,
on stderr and the process exits with status 2. ``HYDRA_FULL_ERROR=1`` lets the exception
through with its full traceback (as Hydra does for its own errors)::

    @hydra.main(config_path=..., config_name="train", version_base="1.3")
    @one_line_errors
    def main(cfg): ...

Under a Hydra multirun the error is re-raised for the launcher, which reports failed jobs.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: exit status of a run refused for a config, data or checkpoint error
USER_ERROR_STATUS = 2


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types printed as one line: bad input of any kind, never a bug's."""
    from omegaconf.errors import OmegaConfBaseException

    from backends.base import BackendUnavailableError

    return (
        ValueError,  # ConfigError, CheckpointError, SparsityConfigError, UnknownNameError, ...
        FileNotFoundError,  # DatasetNotFoundError, a missing checkpoint or store
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
        FloatingPointError,  # NonFiniteLossError, NonFiniteGradientError
        BackendUnavailableError,
        OmegaConfBaseException,  # a missing or mistyped config key
    )


def one_line(exc: BaseException) -> str:
    """``"<ExceptionType>: <message>"`` on one line (newlines folded)."""
    msg = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {msg}"


def _multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # hydra not running: a plain command line
        return False


def one_line_errors(fn: F) -> F:
    """Wrap an entry point so that a user error prints one line and exits with status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except user_errors() as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or _multirun():
                raise
            sys.stderr.write(one_line(exc) + "\n")
            sys.stderr.flush()
            sys.exit(USER_ERROR_STATUS)

    return wrapper  # type: ignore[return-value]


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, a scheduler's stop) end this process as ``SystemExit(143)``, so
    its clean-up runs: ``finally`` blocks, and ``subprocess.run`` stops the child it waits for
    (Python's default would end the process at once and leave its children running)."""
    import signal

    def stop(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
