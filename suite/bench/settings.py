"""The bench's settings: the composed Hydra config -> :class:`BenchSettings`, checked before any
compute (one-line errors naming the bad value and the allowed ones).

Top-level keys (``shapes``, ``sparsities``, ``batches``, ``backends``, ``min_run_time``,
``whole_model``, ``nm_whole_model``) override the profile's ``bench:`` section; null takes the
profile's value (a profile without ``nm_whole_model``: off).
``pairs`` is the number of ABBA block pairs of every paired measurement (default 20; see
:func:`backends.timing.paired_ratio`); ``rounds`` is its old name and is read when ``pairs``
is not given.
``nm_patterns`` (e.g. ``["2:4", "1:4", "1:8"]``, default ``[]``) adds the N:M comparison of
:mod:`suite.bench.nm`: every shape with an N:M mask next to a constant fan-in mask at the same
sparsity (1 - N/M), in the same cases; with it, ``sparsities`` may be ``[]`` (the run then times
only that comparison). ``nm_whole_model=true`` adds the whole-model N:M vs constant fan-in
comparison of :mod:`suite.bench.nm_whole_model` (``nm_whole_model_options``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

import backends
from srigl.errors import require_int
from suite.runtime import DeviceError, parse_device

__all__ = [
    "BenchConfigError",
    "BenchRun",
    "BenchSettings",
    "DEFAULT_PAIRS",
    "parse_nm_pattern",
    "plain",
    "resolve_settings",
    "usable_backends",
]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
MODES = ("kernel", "end_to_end")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PROFILE_KEYS = (
    "shapes",
    "sparsities",
    "batches",
    "backends",
    "min_run_time",
    "whole_model",
    "nm_whole_model",
)
DEFAULT_PAIRS = 20


class BenchConfigError(ValueError):
    """A bench setting has a value outside the allowed ones (the message lists them)."""


@dataclass
class BenchSettings:
    """The resolved grid and timing settings of one bench run.

    ``min_run_time``: seconds per side of one paired measurement, split into ``pairs`` blocks.
    ``rounds``: the pairs again (the name older configs and callers use).
    """

    shapes: list[tuple[int, int]]
    sparsities: list[float]
    batches: list[int]
    backends: list[str]
    min_run_time: float
    whole_model: bool
    threads: int
    dtype: torch.dtype
    device: torch.device
    modes: list[str]
    seed: int
    ablate: float
    rounds: int
    nm_patterns: list[tuple[int, int]] = field(default_factory=list)
    nm_whole_model: bool = False

    @property
    def pairs(self) -> int:
        """ABBA block pairs of every paired measurement."""
        return self.rounds

    @property
    def block_seconds(self) -> float:
        """About how long one block of one side runs."""
        return self.min_run_time / self.rounds


@dataclass
class BenchRun:
    """What the parts of one bench run share: its settings, the usable backends, the
    ``skipped`` {what: why} they fill and the progress bar's tick (called after each case)."""

    settings: BenchSettings
    names: Sequence[str]
    skipped: dict[str, str]
    tick: Callable[[str], None]


def plain(value: Any) -> Any:
    """An OmegaConf node as plain Python containers (other values unchanged)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _pick(cfg: Any, key: str) -> Any:
    """Top-level ``cfg[key]`` unless null, else ``cfg.profile.bench[key]``."""
    value = cfg.get(key)
    if value is None:
        profile = cfg.get("profile") or {}
        value = (profile.get("bench") or {}).get(key)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_grid(values: dict[str, Any], nm_only: bool = False) -> list[tuple[int, int]]:
    """The shapes; every list non-empty (``sparsities`` may be empty when ``nm_only``: the run
    times only the N:M comparison), batches integers >= 1, sparsities in [0, 1)."""
    for key in ("shapes", "sparsities", "batches"):
        empty_ok = nm_only and key == "sparsities" and isinstance(values[key], (list, tuple))
        if not isinstance(values[key], (list, tuple)) or not (values[key] or empty_ok):
            raise BenchConfigError(f"{key} must be a non-empty list, got {values[key]!r}")
    for b in values["batches"]:
        if not _is_int(b) or b < 1:
            raise BenchConfigError(
                f"batches={values['batches']!r}: batch {b!r} is invalid; allowed: integers >= 1"
            )
    for s in values["sparsities"]:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0.0 <= s < 1.0:
            raise BenchConfigError(
                f"sparsities={values['sparsities']!r}: sparsity {s!r} is invalid; "
                "allowed: numbers in [0, 1)"
            )
    shapes = []
    for s in values["shapes"]:
        if (
            not isinstance(s, (list, tuple))
            or len(s) != 2
            or not all(_is_int(v) and v >= 1 for v in s)
        ):
            raise BenchConfigError(f"a shape is [in_features, out_features] >= 1, got {s!r}")
        shapes.append((int(s[0]), int(s[1])))
    return shapes


NM_ALLOWED = "strings 'N:M' with integers 1 <= N < M (quoted in YAML: \"2:4\")"


def parse_nm_pattern(text: Any) -> tuple[int, int]:
    """``"N:M"`` -> ``(N, M)`` with 1 <= N < M.

    Raises:
        BenchConfigError: anything else (names the value and the allowed form; an unquoted YAML
            ``2:4`` arrives as the sexagesimal int 124 and is refused too).
    """
    parts = text.split(":") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise BenchConfigError(f"nm_patterns entry {text!r} is invalid; allowed: {NM_ALLOWED}")
    n, m = int(parts[0]), int(parts[1])
    if not 1 <= n < m:
        raise BenchConfigError(f"nm_patterns entry {text!r} is invalid; allowed: {NM_ALLOWED}")
    return n, m


def _check_nm_patterns(raw: Any, shapes: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """The checked ``(N, M)`` of ``nm_patterns``: a list of 'N:M' strings whose M divides every
    shape's in_features (each group of M inputs holds N weights)."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise BenchConfigError(f"nm_patterns={raw!r} is invalid; allowed: a list of {NM_ALLOWED}")
    patterns = [parse_nm_pattern(p) for p in raw]
    for (_, m), text in zip(patterns, raw):
        for in_f, out_f in shapes:
            if in_f % m:
                raise BenchConfigError(
                    f"nm_patterns entry {text!r}: shape [{in_f}, {out_f}] has in_features {in_f}, "
                    f"not a multiple of M = {m}; allowed: shapes whose in_features M divides"
                )
    if len(set(patterns)) != len(patterns):
        raise BenchConfigError(f"nm_patterns={list(raw)!r} repeats a pattern; allowed: each once")
    return patterns


def _check_timing(cfg: Any, values: dict[str, Any]) -> tuple[int | None, float, int]:
    """``(threads or None, min_run_time, pairs)``, checked."""
    threads = cfg.get("threads")
    allowed_threads = "an integer >= 1 or null"
    if (
        threads is not None
        and require_int("threads", threads, allowed_threads, BenchConfigError) < 1
    ):
        raise BenchConfigError(f"threads={threads!r} is invalid; allowed: {allowed_threads}")
    raw = values["min_run_time"] if values["min_run_time"] is not None else 0.2
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not raw > 0:
        raise BenchConfigError(f"min_run_time={raw!r} is invalid; allowed: a number > 0 seconds")
    pairs = cfg.get("pairs")
    key = "pairs"
    if pairs is None:
        pairs, key = cfg.get("rounds"), "rounds"
    if pairs is None:
        pairs = DEFAULT_PAIRS
    if not _is_int(pairs) or pairs < 2:
        raise BenchConfigError(f"{key}={pairs!r} is invalid; allowed: an integer >= 2")
    return threads, float(raw), int(pairs)


def resolve_settings(cfg: Any) -> BenchSettings:
    """Merge the top-level overrides with the profile's ``bench:`` section and check them.

    Raises:
        BenchConfigError: an unknown mode / dtype / device, an empty or malformed list, a batch
            below 1, a sparsity outside [0, 1), fewer than 2 pairs, a time <= 0, an N:M pattern
            that is not 'N:M' with 1 <= N < M or whose M does not divide a shape's in_features.
        UnknownNameError: an unknown backend name (lists the known ones).
    """
    values = {k: plain(_pick(cfg, k)) for k in PROFILE_KEYS}
    raw_nm = plain(cfg.get("nm_patterns"))
    shapes = _check_grid(values, nm_only=bool(raw_nm) and isinstance(raw_nm, (list, tuple)))
    nm_patterns = _check_nm_patterns(raw_nm, shapes)
    names = values["backends"] or backends.names()
    wm = cfg.get("whole_model_options") or {}
    for n in [*names, *(plain(wm.get("backends")) or [])]:
        backends.get(n)  # UnknownNameError lists the known names
    modes = list(plain(cfg.get("modes")) or MODES)
    for m in modes:
        if m not in MODES:
            raise BenchConfigError(f"mode {m!r} is not one of {MODES}")
    dtype_name = str(cfg.get("dtype") or "float32")
    if dtype_name not in DTYPES:
        raise BenchConfigError(f"dtype {dtype_name!r} is not one of {sorted(DTYPES)}")
    try:
        device = parse_device(str(cfg.get("device") or "cpu"))
    except DeviceError as exc:
        raise BenchConfigError(str(exc)) from None
    threads, min_run_time, pairs = _check_timing(cfg, values)
    return BenchSettings(
        shapes=shapes,
        sparsities=[float(s) for s in values["sparsities"]],
        batches=[int(b) for b in values["batches"]],
        backends=list(names),
        min_run_time=min_run_time,
        whole_model=bool(values["whole_model"]),
        threads=int(threads) if threads is not None else (os.cpu_count() or 1),
        dtype=DTYPES[dtype_name],
        device=device,
        modes=modes,
        seed=int(cfg.get("seed") or 0),
        ablate=float(cfg.get("ablate") or 0.0),
        rounds=pairs,
        nm_patterns=nm_patterns,
        nm_whole_model=bool(values["nm_whole_model"]),
    )


def usable_backends(
    names: Sequence[str], device: torch.device, dtype: torch.dtype
) -> tuple[list[str], dict[str, str]]:
    """Split ``names`` into those that run ``dtype`` on ``device`` here and ``{name: why not}``."""
    ok, skipped = [], {}
    for name in names:
        can, why = backends.get(name).supports(device, dtype)
        if can:
            ok.append(name)
        else:
            skipped[name] = why
    return ok, skipped


def dense_baselines(names: Sequence[str]) -> list[str]:
    """The dense baselines among ``names``: backends whose class sets ``dense_baseline = True``;
    where no backend class has that attribute, ``dense`` alone (when measured)."""
    classes = {n: backends.get(n) for n in names}
    if any(hasattr(c, "dense_baseline") for c in backends_classes()):
        return [n for n, c in classes.items() if getattr(c, "dense_baseline", False)]
    return [n for n in names if n == "dense"]


def backends_classes() -> list[type]:
    """Every registered backend class."""
    return [backends.get(n) for n in backends.names()]
