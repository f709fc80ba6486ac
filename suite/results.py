"""Result records and the results store.

A result record is one JSON object describing one run::

    {
      "schema_version": 1,
      "kind": "train" | "bench",
      "run_id": "...",                 # stable id of the run (hash of its defining config)
      "created": "2026-11-27T01:40:00+00:00",
      "git": {"commit": "abc...", "dirty": false},
      "host": {"hostname", "platform", "cpu", "cpu_count", "threads", "gpu",   # old keys
               "vendor", "family", "model", "stepping", "isa", "cores", "ram_gib", "arch",
               "torch", "onednn", "asv_name", "load_start", "load_end", "steal_fraction"},
      "versions": {"python", "torch", ...},
      "config": {...},                 # the full resolved config
      "metrics": {...}                 # kind-specific, see below
    }

``train`` metrics must hold ``top1_accuracy`` (percent). ``bench`` metrics must hold
``rows``: a list of dicts with the keys of :data:`BENCH_ROW_KEYS`, and (every row written since
the paired protocol) :data:`BENCH_INTERVAL_KEYS`: ``speedup`` = baseline time / candidate time,
its 95% interval ``speedup_ci_low`` <= speedup <= ``speedup_ci_high`` and ``n_pairs`` >= 2.

The store is a folder with one file per run, written atomically (temp file + rename) so that
parallel jobs never interleave and a crashed run never leaves a partial record. The reader
validates every file and skips nothing silently.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
KINDS = ("train", "bench")
TOP_LEVEL_KEYS = (
    "schema_version",
    "kind",
    "run_id",
    "created",
    "git",
    "host",
    "versions",
    "config",
    "metrics",
)
BENCH_ROW_KEYS = (
    "backend",
    "in_features",
    "out_features",
    "sparsity",
    "batch",
    "dtype",
    "threads",
    "mode",
    "median_s",
    "iqr_s",
    "dense_median_s",
)
#: the paired speed-up of a row (backends.timing.paired_ratio): every row suite.bench writes has
#: them; rows of older records lack them all (read as "no interval"), never some of them
BENCH_INTERVAL_KEYS = ("speedup", "speedup_ci_low", "speedup_ci_high", "n_pairs")
BENCH_MODES = ("kernel", "end_to_end")
TRAIN_REQUIRED_METRICS = ("top1_accuracy",)
DEFAULT_ROOT = Path("results/runs")


class InvalidRecordError(ValueError):
    """A result record (or a file in the store) does not follow the schema."""


# --------------------------------------------------------------------------- metadata


def git_info(cwd: str | os.PathLike | None = None) -> dict[str, Any]:
    """The current git commit and whether the work tree is dirty (``None`` outside git).

    Dirty means a tracked file outside ``results/`` differs from the commit: what the suite
    generates there (REPORT.md, REPRODUCTION.md, figures) says nothing about the code, so a
    second ``make reproduce`` after a first one still makes clean records."""
    cwd = Path(cwd) if cwd is not None else Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top,exclude)results"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def host_info() -> dict[str, Any]:
    """Facts about the machine: host name, platform, CPU model, cores, torch threads, GPU (the
    old keys), plus the machine identity and the load at start and end of the run
    (:func:`suite.machine.host_fields`: vendor, family, model, stepping, isa, cores, ram_gib,
    arch, torch, onednn, asv_name, load_start, load_end, steal_fraction)."""
    from backends.kernels.build import cpu_model  # the one CPU-name reader
    from suite import machine

    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": None,
        "gpu": None,
    }
    try:
        import torch

        info["threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    identity = machine.host_fields()
    identity.pop("cpu", None)  # the old key keeps its reader (the same model name)
    identity.pop("threads", None)
    return {**info, **identity}


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that shape results (``None`` for those not installed)."""
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in (
        "torch",
        "torchvision",
        "numpy",
        "numba",
        "triton",
        "hydra-core",
        "scikit-learn",
        "timm",
        "srigl-bench",
    ):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def config_hash(config: Mapping[str, Any], length: int | None = 12) -> str:
    """A stable SHA-256 (hex) of a JSON-serialisable mapping (key order does not matter),
    cut to ``length`` characters (None: the whole digest)."""
    blob = json.dumps(_jsonable(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _jsonable(obj: Any) -> Any:
    """Convert tensors, numpy scalars, paths and tuples to plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy / torch
        return _jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    return obj


def make_record(
    kind: str,
    config: Mapping[str, Any],
    metrics: Mapping[str, Any],
    run_id: str | None = None,
) -> dict[str, Any]:
    """Build a validated result record with the machine's metadata filled in.

    Args:
        kind: "train" or "bench".
        config: the full resolved config of the run (plain dict).
        metrics: kind-specific metrics (see the module docstring).
        run_id: defaults to a hash of ``config``.
    """
    record = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "run_id": run_id or config_hash(config),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": git_info(),
        "host": host_info(),
        "versions": library_versions(),
        "config": _jsonable(dict(config)),
        "metrics": _jsonable(dict(metrics)),
    }
    validate_record(record)
    return record


# --------------------------------------------------------------------------- validation


def validate_record(record: Any) -> None:
    """Check a record against the schema.

    Raises:
        InvalidRecordError: naming the first problem found.
    """
    if not isinstance(record, Mapping):
        raise InvalidRecordError(f"a record must be a JSON object, got {type(record).__name__}")
    missing = [k for k in TOP_LEVEL_KEYS if k not in record]
    if missing:
        raise InvalidRecordError(f"record lacks keys {missing}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise InvalidRecordError(
            f"schema_version {record['schema_version']!r} is not supported "
            f"(this reader knows {SCHEMA_VERSION})"
        )
    if record["kind"] not in KINDS:
        raise InvalidRecordError(f"kind {record['kind']!r} is not one of {KINDS}")
    if not isinstance(record["run_id"], str) or not record["run_id"]:
        raise InvalidRecordError(f"run_id must be a non-empty string, got {record['run_id']!r}")
    for key in ("git", "host", "versions", "config", "metrics"):
        if not isinstance(record[key], Mapping):
            raise InvalidRecordError(f"{key!r} must be an object")
    metrics = record["metrics"]
    if record["kind"] == "train":
        _validate_trainer(record["config"])
        for key in TRAIN_REQUIRED_METRICS:
            value = metrics.get(key)
            if not isinstance(value, (int, float)) or not 0.0 <= value <= 100.0:
                raise InvalidRecordError(
                    f"train metric {key!r} must be a number in [0, 100], got {value!r}"
                )
    else:
        rows = metrics.get("rows")
        if not isinstance(rows, list) or not rows:
            raise InvalidRecordError("bench metrics need a non-empty list 'rows'")
        for i, row in enumerate(rows):
            _validate_bench_row(i, row)


def _validate_trainer(config: Mapping[str, Any]) -> None:
    """A train record's ``config.trainer`` names its method (every report table groups by it):
    an object with a non-empty ``name`` or ``label``, or a non-empty string."""
    if "trainer" not in config:
        raise InvalidRecordError("train record lacks config.trainer (the method it trained)")
    trainer = config["trainer"]
    if isinstance(trainer, Mapping):
        named = any(isinstance(trainer.get(k), str) and trainer[k] for k in ("name", "label"))
    else:
        named = isinstance(trainer, str) and bool(trainer)
    if not named:
        raise InvalidRecordError(
            f"config.trainer={trainer!r} names no method; allowed: an object with a non-empty "
            "'name' (or 'label'), or a non-empty string"
        )


def _validate_bench_row(i: int, row: Any) -> None:
    if not isinstance(row, Mapping):
        raise InvalidRecordError(f"bench row {i} must be an object")
    missing = [k for k in BENCH_ROW_KEYS if k not in row]
    if missing:
        raise InvalidRecordError(f"bench row {i} lacks keys {missing}")
    if row["mode"] not in BENCH_MODES:
        raise InvalidRecordError(f"bench row {i}: mode {row['mode']!r} not in {BENCH_MODES}")
    for key in ("median_s", "dense_median_s"):
        value = row[key]
        if not isinstance(value, (int, float)) or not value > 0:
            raise InvalidRecordError(f"bench row {i}: {key} must be > 0, got {value!r}")
    if not isinstance(row["iqr_s"], (int, float)) or row["iqr_s"] < 0:
        raise InvalidRecordError(f"bench row {i}: iqr_s must be >= 0, got {row['iqr_s']!r}")
    if not 0.0 <= float(row["sparsity"]) < 1.0:
        raise InvalidRecordError(f"bench row {i}: sparsity {row['sparsity']!r} not in [0, 1)")
    _validate_interval(i, row)


def _validate_interval(i: int, row: Mapping[str, Any]) -> None:
    """The paired speed-up keys: all or none (an older row), consistent when present."""
    present = [k for k in BENCH_INTERVAL_KEYS if k in row]
    if not present:
        return
    if len(present) != len(BENCH_INTERVAL_KEYS):
        missing = [k for k in BENCH_INTERVAL_KEYS if k not in row]
        raise InvalidRecordError(f"bench row {i} has {present} but lacks {missing}")
    low, est, high = row["speedup_ci_low"], row["speedup"], row["speedup_ci_high"]
    if not all(isinstance(v, (int, float)) and v > 0 for v in (low, est, high)):
        raise InvalidRecordError(
            f"bench row {i}: speedup {est!r} and its interval [{low!r}, {high!r}] must be > 0"
        )
    if not (low <= est * (1 + 1e-9) and est <= high * (1 + 1e-9)):
        raise InvalidRecordError(
            f"bench row {i}: speedup {est!r} lies outside its interval [{low!r}, {high!r}]"
        )
    n = row["n_pairs"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise InvalidRecordError(f"bench row {i}: n_pairs {n!r} is invalid; allowed: >= 2")


# --------------------------------------------------------------------------- the store


def current_umask() -> int:
    """The process's umask (read from /proc on Linux, which changes nothing; else set back)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    The file gets the permissions of a plain ``open(path, "w")`` (0666 less the umask), not
    the temp file's 0600, so colleagues on a shared filesystem can read records/checkpoints.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


@dataclass
class LoadError:
    """A file of the store that could not be read as a valid record."""

    path: Path
    error: str


class ResultStore:
    """A folder of result records, one JSON file per run.

    Args:
        root: the folder (created on first write). Default ``results/runs``.
    """

    def __init__(self, root: str | os.PathLike = DEFAULT_ROOT) -> None:
        self.root = Path(root)

    def path_for(self, record: Mapping[str, Any]) -> Path:
        """Where ``record`` is stored: ``<root>/<kind>-<run_id>.json``."""
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(record["run_id"]))
        return self.root / f"{record['kind']}-{safe}.json"

    def write(self, record: Mapping[str, Any]) -> Path:
        """Validate and atomically write ``record``; a rerun of the same run replaces its file."""
        validate_record(record)
        data = json.dumps(_jsonable(record), indent=1, sort_keys=True, allow_nan=False)
        return atomic_write_bytes(self.path_for(record), (data + "\n").encode())

    def files(self) -> list[Path]:
        """The record files of the store, sorted (temp files of writes in flight are ignored)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.glob("*.json") if not p.name.startswith("."))

    def load(self, path: str | os.PathLike) -> dict[str, Any]:
        """Read and validate one record file; errors name the file."""
        path = Path(path)
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InvalidRecordError(f"{path}: not a readable JSON record ({exc})") from exc
        try:
            validate_record(record)
        except InvalidRecordError as exc:
            raise InvalidRecordError(f"{path}: {exc}") from exc
        return record

    def read(self, kind: str | None = None, strict: bool = True) -> list[dict[str, Any]]:
        """All records (of ``kind`` if given).

        With ``strict=True`` an invalid file raises :class:`InvalidRecordError`; with
        ``strict=False`` use :meth:`read_with_errors` to also get the failures.
        """
        records, errors = self.read_with_errors(kind)
        if strict and errors:
            listing = "; ".join(f"{e.path}: {e.error}" for e in errors)
            raise InvalidRecordError(f"{len(errors)} invalid record file(s): {listing}")
        return records

    def read_with_errors(
        self, kind: str | None = None
    ) -> tuple[list[dict[str, Any]], list[LoadError]]:
        """``(records, errors)``: every valid record and one :class:`LoadError` per bad file."""
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind {kind!r} is not one of {KINDS}")
        loaded, errors = [], []
        for path in self.files():
            try:
                loaded.append((path, self.load(path)))
            except InvalidRecordError as exc:
                errors.append(LoadError(path, str(exc)))
        conflicting = _conflicts(loaded)
        errors += conflicting
        bad = {e.path for e in conflicting}
        records = [r for p, r in loaded if p not in bad and (kind is None or r["kind"] == kind)]
        return records, sorted(errors, key=lambda e: e.path)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())

    def __len__(self) -> int:
        return len(self.files())


def _conflicts(loaded: Sequence[tuple[Path, Mapping[str, Any]]]) -> list[LoadError]:
    """One :class:`LoadError` per file whose run (kind and run id) another file also holds
    with different metrics: neither is used, and each error names the other files (the reader
    never picks one silently). Identical copies are no conflict."""
    by_run: dict[tuple[str, str], list[tuple[Path, Mapping[str, Any]]]] = {}
    for path, record in loaded:
        by_run.setdefault((record["kind"], record["run_id"]), []).append((path, record))
    errors = []
    for (kind, rid), group in by_run.items():
        metrics = {json.dumps(_jsonable(r["metrics"]), sort_keys=True) for _, r in group}
        if len(metrics) < 2:
            continue
        for path, _ in group:
            others = ", ".join(str(p) for p, _ in group if p != path)
            errors.append(
                LoadError(
                    path,
                    f"{kind} run {rid} conflicts with {others} (same run id, different "
                    "metrics); keep the right file and remove the other",
                )
            )
    return errors


# --------------------------------------------------------------------------- run and cell ids

#: dotted config keys that do not change a run's result and are left out of its run id
RUN_ID_EXCLUDED = (
    "resume",
    "overwrite",
    "results_dir",
    "checkpoint_dir",
    "log_dir",
    "device",
    "logger",
    "num_workers",
    "progress",
    "checkpoint",
    "threads",
    "skip_existing",
    "dataset.root",
)


def drop_keys(data: Mapping[str, Any], dotted: Sequence[str]) -> dict[str, Any]:
    """A copy of ``data`` without the ``dotted`` keys (``"a.b"`` removes ``data["a"]["b"]``)."""
    out = dict(data)
    for key in dotted:
        head, _, rest = key.partition(".")
        if head not in out:
            continue
        if rest:
            if isinstance(out[head], Mapping):
                out[head] = drop_keys(out[head], [rest])
        else:
            del out[head]
    return out


def run_id(config: Mapping[str, Any]) -> str:
    """A train run's id: the hash of its experiment-defining config (``RUN_ID_EXCLUDED`` out)."""
    return config_hash(drop_keys(config, RUN_ID_EXCLUDED))


def _is_dense(config: Mapping[str, Any]) -> bool:
    trainer = config.get("trainer")
    return isinstance(trainer, Mapping) and trainer.get("name") == "dense"


def cell_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """What defines a report cell: the run id's config without the seed (and, for dense, which
    ignores it, without the sparsity): the seeds of one cell differ in nothing else."""
    drop = [*RUN_ID_EXCLUDED, "seed"] + (["sparsity"] if _is_dense(config) else [])
    return drop_keys(config, drop)


def cell_id(config: Mapping[str, Any]) -> str:
    """Hash of :func:`cell_config`: records with equal cell ids are seeds of one cell."""
    return config_hash(cell_config(config))


def settings_id(config: Mapping[str, Any]) -> str:
    """Hash of the experiment's settings (:func:`cell_config` without trainer and sparsity):
    the cells of one method comparison share it (same epochs, batch size, optimizer...)."""
    return config_hash(drop_keys(cell_config(config), ["trainer", "sparsity"]))
