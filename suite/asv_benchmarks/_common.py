"""Shared set-up of the asv benchmarks: the profile, API checks, test layers (threads:
``suite.runtime.set_threads(THREADS, grad=...)``).

Only public APIs of the project are used (``backends.names/available/create``,
``srigl.create_trainer/condense``, ``suite.train.compose/run``), so the benchmarks also run on
older commits that have them; where an API is missing, set-up raises ``NotImplementedError``,
which asv records as a skipped benchmark (never a made-up number).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

THREADS_ENV = "SRIGL_ASV_THREADS"
#: torch and numba threads of every benchmark (2 = this project's reference machine)
THREADS = int(os.environ.get(THREADS_ENV, "2"))
PROFILE_ENV = "SRIGL_ASV_PROFILE"
DEFAULT_PROFILE = "quick"


def require(module: str, *attributes: str) -> Any:
    """Import ``module`` and check it has ``attributes``; else raise ``NotImplementedError``.

    This is how a benchmark skips (asv: ``n/a``) on a commit that predates an API.
    """
    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        raise NotImplementedError(f"{module} is not importable at this commit: {err}") from None
    missing = [a for a in attributes if not hasattr(mod, a)]
    if missing:
        raise NotImplementedError(f"{module} has no {missing} at this commit")
    return mod


def profile_name() -> str:
    """The Hydra profile that sizes the asv run: ``$SRIGL_ASV_PROFILE``, default ``quick``."""
    return os.environ.get(PROFILE_ENV, DEFAULT_PROFILE)


def load_profile(name: str | None = None, conf_dir: Path | None = None) -> dict[str, Any]:
    """The profile ``<conf_dir>/profile/<name>.yaml`` as a plain dict; ``conf_dir`` defaults
    to the Hydra configs of the installed ``suite`` package (the commit asv measures).

    Raises:
        NotImplementedError: the profile file does not exist at this commit (asv skips).
    """
    name = name or profile_name()
    if conf_dir is None:
        conf_dir = Path(require("suite").__file__).parent / "conf"
    path = Path(conf_dir) / "profile" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise NotImplementedError(f"profile {name!r} not found at {path}; known: {known}")
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def asv_setting(key: str, default: Any, name: str | None = None) -> Any:
    """``profile.asv.<key>`` of the active profile, or ``default`` where the key is absent."""
    return (load_profile(name).get("asv") or {}).get(key, default)


def constant_fan_in_layer(
    in_features: int, out_features: int, sparsity: float, seed: int = 0
) -> tuple[Any, Any, Any]:
    """A random Linear layer with a constant fan-in mask, as SRigL trains them.

    The mask is :func:`srigl.masks.constant_fan_in_mask` (B = floor(out * in * (1 - sparsity)),
    k = floor(B / out) random positions per row, seeded).

    Returns:
        ``(weight, mask, bias)``: float32 [out, in], bool [out, in], float32 [out].
    """
    import torch

    masks = require("srigl.masks", "constant_fan_in_mask")
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=gen) / in_features**0.5
    mask = masks.constant_fan_in_mask((out_features, in_features), sparsity, gen)
    bias = torch.randn(out_features, generator=gen) * 0.01
    return weight, mask, bias


def backend_names() -> list[str]:
    """Every registered backend at this commit (``[]`` before the backends package existed)."""
    try:
        import backends
    except ImportError:
        return []
    names = getattr(backends, "names", None)
    return list(names()) if callable(names) else []


def build_backend(name: str, weight: Any, mask: Any, bias: Any, layer_name: str) -> Any:
    """``backends.create(...)``, or ``NotImplementedError`` (asv skip) where ``name`` cannot run
    on this machine's CPU; the reason comes from ``backends.available``."""
    backends = require("backends", "available", "create")
    ok, why = backends.available(name, "cpu")
    if not ok:
        raise NotImplementedError(f"backend {name!r} unavailable on cpu: {why}")
    return backends.create(name, weight, mask, bias, layer_name=layer_name)
