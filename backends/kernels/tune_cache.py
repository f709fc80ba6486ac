"""What the autotuners share (fused Linear kernel and direct conv kernel): the ``SRIGL_TUNE``
switch, the batch buckets, the machine key, the fastest-call statistic over the one timer's
interleaved rounds (:mod:`backends.timing`) and the
per-machine JSON cache of winners.

A cache file lives at ``<user cache dir>/tuner/<prefix>-<digest of the machine key>.json`` and
holds ``{"schema", "machine", "entries"}``; it is read once per process and written atomically
(temp file + rename). One that does not parse, has another schema or names another machine is
ignored with a :class:`TuneCacheWarning` and rebuilt. Each entry is checked when read (the
tuner's ``check_entry``): a bad one (hand-edited, another version's) is dropped with one warning,
so it is timed again and written back without it. A write holds a file lock and merges the
file's current entries with this process's (this process's win on a shared key), so two
processes tuning at once keep both processes' entries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pathlib
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any, TypeVar

import torch
from filelock import FileLock, Timeout

from backends.kernels.build import cache_dir, cpu_model
from backends.timing import (
    calls_per_block,
    core_scaling,
    fastest_call_block,
    fastest_of,
    gave_cores,
    interleaved_blocks,
)

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class TuneCacheWarning(UserWarning):
    """A tuner's cache file was unreadable or from another machine; it is rebuilt."""


def tuning_enabled() -> bool:
    """False when ``SRIGL_TUNE`` is ``off``/``0``/``false``/``no`` (the static rule runs)."""
    return os.environ.get("SRIGL_TUNE", "on").strip().lower() not in ("off", "0", "false", "no")


def bucket_of(batch: int, buckets: int = 11) -> int:
    """The batch bucket of ``batch`` rows: 0 for 1, else ceil(log2(batch)), up to buckets - 1."""
    return min((max(int(batch), 1) - 1).bit_length(), buckets - 1)


def machine_key(isa: str, threads: int, kernels: str = "") -> dict[str, Any]:
    """What a tuning result depends on besides the layer: CPU, ISA level, threads, torch, and
    the kernels' sources (``kernels``: :func:`backends.kernels.build.source_digest`; a changed
    kernel gets a new cache file, so its variants are timed again)."""
    key = {
        "cpu": cpu_model(),
        "isa": isa,
        "threads": int(threads),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
    }
    if kernels:
        key["kernels"] = kernels
    return key


def load_average() -> float | None:
    """The machine's 1-minute load average, rounded to 0.01 (None where the OS has none):
    what a tuner's cache entry records as ``load_avg_1m``."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


CORES_GIVEN_TTL_S = 10.0  # how long one measurement of the cores given is reused
_cores_given: dict[int, tuple[float, float | None]] = {}  # threads -> (when, value)


def cores_given(threads: int, fresh: bool = False) -> float | None:
    """How many of ``threads`` cores the host gives this process now
    (:func:`backends.timing.core_scaling`, about 0.15 s; one measurement is reused for
    :data:`CORES_GIVEN_TTL_S` unless ``fresh``); None below 2 threads: what a tuner's cache
    entry records as ``cores_given``."""
    if threads < 2:
        return None
    now = time.monotonic()
    when, value = _cores_given.get(threads, (-math.inf, None))
    if fresh or now - when > CORES_GIVEN_TTL_S:
        value = core_scaling(threads)
        _cores_given[threads] = (now, value)
    return value


def tuned_under_load(entry: Mapping[str, Any], threads: int | None = None) -> bool:
    """A cache entry timed while the machine was busier than its cores (its ``load_avg_1m``),
    and the machine is quiet now (load at most half the cores); or, given its ``threads``, one
    timed while the host gave less than :data:`backends.timing.CORE_SHARE_MIN` of them (its
    ``cores_given``: a VM whose second vCPU was shared made serial variants win) that gives
    them now. Such a winner was chosen for a loaded machine, and is timed again."""
    then, now, cores = entry.get("load_avg_1m"), load_average(), os.cpu_count() or 1
    if isinstance(then, (int, float)) and now is not None and then > cores and now <= cores / 2:
        return True
    given = entry.get("cores_given")
    if threads is None or threads < 2 or isinstance(given, bool):
        return False
    if not isinstance(given, (int, float)) or gave_cores(given, threads):
        return False
    return gave_cores(cores_given(threads), threads)


def host_fields(threads: int) -> dict[str, float | None]:
    """What every tuner's cache entry records about the host while it was timed:
    ``load_avg_1m`` (:func:`load_average`) and ``cores_given`` (:func:`cores_given`), the
    fields :func:`tuned_under_load` reads."""
    return {"load_avg_1m": load_average(), "cores_given": cores_given(threads)}


#: tries of :func:`time_while_given`, and its pause between them (seconds)
WITHHELD_TRIES = 3
WITHHELD_PAUSE_S = 0.2


def time_while_given(
    time_fn: Callable[[], dict[K, float]],
    threads: int,
    is_parallel: Callable[[K], bool],
) -> tuple[dict[K, float], dict[str, float | None]]:
    """``(time_fn(), host_fields)`` timed while the host gave the cores, if it can be had.

    A tuner's candidates are timed in about 0.1 s; a VM host that takes the second vCPU for
    longer than that makes every parallel candidate slow, and a serial variant wins a layer
    that runs twice as fast in parallel (seen on the Zen 5: the ViT layer 3072->768 at 90%,
    batch 1, tuned serial at 23.9 us where its parallel variant ran 12.5 us). So when the
    fastest candidate is serial (``is_parallel(key)`` false) and parallel ones were timed, the
    cores the host gives are measured afresh (:func:`cores_given`); below
    :data:`backends.timing.CORE_SHARE_MIN` of ``threads`` the candidates are timed again after
    :data:`WITHHELD_PAUSE_S`, up to :data:`WITHHELD_TRIES` times in all. The fields record the
    last measurement, so an entry still timed without the cores is timed again in a later
    process that has them (:func:`tuned_under_load`)."""
    for attempt in range(WITHHELD_TRIES):
        times = time_fn()
        serial_won = not is_parallel(min(times, key=times.__getitem__)) and any(
            map(is_parallel, times)
        )
        if threads < 2 or not serial_won:
            return times, host_fields(threads)
        given = cores_given(threads, fresh=True)
        fields = {"load_avg_1m": load_average(), "cores_given": given}
        if gave_cores(given, threads):
            return times, fields
        if attempt + 1 < WITHHELD_TRIES:
            time.sleep(WITHHELD_PAUSE_S)
    return times, fields


def host_fields_problem(entry: Mapping[str, Any]) -> str | None:
    """Why an entry's :func:`host_fields` are not numbers (or null), else None."""
    for field in ("load_avg_1m", "cores_given"):
        value = entry.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{field} {value!r} is not a number"
    return None


def fastest_call(
    fn: Callable[[], object], calls: int, clock: Callable[[], float] | None = None
) -> float:
    """The fastest of ``calls`` calls of ``fn`` in seconds of ``clock`` (default: wall time,
    ``time.perf_counter``; ``time.thread_time`` counts this thread's CPU time only)."""
    return fastest_of(fn, calls, clock or time.perf_counter)


def fastest_interleaved(
    fns: Mapping[K, Callable[[], object]],
    rounds: int,
    round_seconds: float,
    min_calls: int = 2,
    max_calls: int = 64,
) -> dict[K, float]:
    """The fastest call, in seconds, of each candidate in ``fns``, through the project's one
    timer (:mod:`backends.timing`).

    Each candidate is called once (warm-up, and to size its rounds: about ``round_seconds`` of
    calls, ``min_calls`` to ``max_calls``: :func:`backends.timing.calls_per_block`), then the
    candidates take turns over ``rounds`` rounds, the order reversed every other round
    (:func:`backends.timing.interleaved_blocks`), so that load on a shared machine hits them
    alike. Other processes only ever add time: the fastest call is the most repeatable
    statistic for picking a winner (:func:`backends.timing.fastest_call_block`).
    """
    calls = {
        key: calls_per_block(fn, round_seconds, min_calls, max_calls) for key, fn in fns.items()
    }
    samples = interleaved_blocks(fns, rounds, calls, fastest_call_block)
    return {key: min(times) for key, times in samples.items()}


class TuneCache:
    """The cache files of one tuner (``prefix``: ``fused``, ``conv``), with an in-process copy.

    Args:
        prefix: file name prefix. schema: the entry format's version (a file of another
            version is ignored). what: the tuner, named in warnings.
        check_entry: ``check_entry(entry) -> None`` or the reason the entry (as read from the
            file, any JSON value) is not one this tuner wrote; default: every entry is kept.
    """

    def __init__(
        self,
        prefix: str,
        schema: int,
        what: str,
        check_entry: Callable[[Any], str | None] | None = None,
    ) -> None:
        self.prefix, self.schema, self.what = prefix, schema, what
        self.check_entry = check_entry or (lambda entry: None)
        self.lock = threading.Lock()
        self._memory: dict[str, dict[str, Any]] = {}
        self._dropped: dict[str, set[str]] = {}  # per file: keys this process removed

    def path(self, machine: dict[str, Any]) -> pathlib.Path:
        """The JSON file of ``machine`` (see :func:`machine_key`)."""
        digest = hashlib.sha256(json.dumps(machine, sort_keys=True).encode()).hexdigest()[:12]
        return cache_dir() / "tuner" / f"{self.prefix}-{digest}.json"

    def entries(self, machine: dict[str, Any]) -> tuple[pathlib.Path, dict[str, Any]]:
        """``(path, entries)`` of ``machine``: the file's entries, read on first use in this
        process (the dict is this process's copy: add to it, then :meth:`save`)."""
        path = self.path(machine)
        if str(path) not in self._memory:
            self._memory[str(path)] = self._read(path, machine)
        return path, self._memory[str(path)]

    def drop(self, machine: dict[str, Any], key: str, why: str) -> None:
        """Remove entry ``key`` of ``machine`` (it failed when used) with one warning; the next
        :meth:`save` writes the file without it."""
        path, entries = self.entries(machine)
        if entries.pop(key, None) is not None:
            self._dropped.setdefault(str(path), set()).add(key)
            self._warn(f"dropping the {self.what} cache entry {key!r} of {path} ({why})")

    def save(self, machine: dict[str, Any]) -> None:
        """Write ``machine``'s entries to its file, merged with the entries another process
        wrote there meanwhile (under a file lock; a failure costs only a timing next time)."""
        path, entries = self.entries(machine)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(path) + ".lock", timeout=30):
                self._merge(path, machine, entries)
                data = {"schema": self.schema, "machine": machine, "entries": entries}
                fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
                with os.fdopen(fd, "w") as fh:
                    json.dump(data, fh, indent=1, sort_keys=True)
                os.replace(tmp, path)
        except (OSError, Timeout) as err:
            log.warning("cannot write the %s cache %s: %s", self.what, path, err)

    def _merge(self, path: pathlib.Path, machine: dict[str, Any], entries: dict) -> None:
        """Add to ``entries`` (in place) the valid entries the file holds now that this process
        neither has nor dropped."""
        dropped = self._dropped.get(str(path), set())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TuneCacheWarning)  # warned when first read
            on_disk = self._read(path, machine)
        for key, entry in on_disk.items():
            if key not in entries and key not in dropped:
                entries[key] = entry

    def forget(self) -> None:
        """Drop the in-process copy (tests; a changed cache directory)."""
        with self.lock:
            self._memory.clear()

    def _read(self, path: pathlib.Path, machine: dict[str, Any]) -> dict[str, Any]:
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or data.get("schema") != self.schema:
                raise ValueError(f"schema {data.get('schema') if isinstance(data, dict) else '?'}")
            if data.get("machine") != machine:
                raise ValueError(f"written for machine {data.get('machine')}, this is {machine}")
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise ValueError("entries is not a mapping")
        except (OSError, ValueError, KeyError, TypeError) as err:
            self._warn(f"ignoring the {self.what} cache {path} ({err}); it will be rebuilt")
            return {}
        kept = {}
        for key, entry in entries.items():
            why = self.check_entry(entry)
            if why is None:
                kept[key] = entry
            else:
                self._warn(
                    f"dropping the {self.what} cache entry {key!r} of {path} ({why}); "
                    "it will be timed again"
                )
        return kept

    @staticmethod
    def _warn(message: str) -> None:
        warnings.warn(message, TuneCacheWarning, stacklevel=5)
