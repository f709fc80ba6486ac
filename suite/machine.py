"""Which machine made a number: CPU identity, ISA level, versions and load, for every record.

Results of different CPUs must never share a table cell or an asv history, so every record
(train, bench, asv) carries :func:`identity` and the asv machine name is derived from it
(:func:`asv_machine_name`, e.g. ``amd-f25m17-avx512-2c``). :func:`same_class` says whether two
identities are the same machine class (vendor, family, model, ISA level, cores): bitwise
agreement of trained weights is expected only within one class.

Reads ``/proc/cpuinfo``, ``/proc/stat`` and ``/proc/meminfo`` where they exist (Linux) and
degrades to ``platform`` facts elsewhere; never imports the kernel extension (building it would
be a side effect of writing a record): the ISA level the kernels run is taken from the loaded
extension when this process has loaded it, else from the CPU flags the kernels dispatch on.
"""

from __future__ import annotations

import functools
import os
import pathlib
import platform
import re
import sys
from collections.abc import Mapping
from typing import Any

import torch

from backends.timing import CORE_SHARE_MIN, core_scaling, gave_cores

__all__ = [
    "ISA_LEVELS",
    "asv_machine_name",
    "cpu_facts",
    "identity",
    "isa_level",
    "host_fields",
    "load_snapshot",
    "core_scaling",
    "mark_end",
    "mark_start",
    "scaling_noise",
    "same_class",
    "start_snapshot",
    "steal_fraction",
]

ISA_LEVELS = ("generic", "avx2", "avx512")
_VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}


@functools.cache
def cpu_facts() -> dict[str, Any]:
    """CPU identity from ``/proc/cpuinfo`` (first processor): model name, vendor, family, model,
    stepping, and the flags the kernels dispatch on. Missing fields are None."""
    facts: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "vendor": None,
        "family": None,
        "model": None,
        "stepping": None,
        "flags": [],
    }
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return facts
    first = text.split("\n\n", 1)[0]
    fields = {}
    for line in first.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.strip()
    facts["cpu"] = fields.get("model name", facts["cpu"])
    facts["vendor"] = fields.get("vendor_id")
    for key, name in (("cpu family", "family"), ("model", "model"), ("stepping", "stepping")):
        value = fields.get(key)
        facts[name] = int(value) if value and value.isdigit() else None
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512dq")
    facts["flags"] = sorted(set(fields.get("flags", "").split()) & set(wanted))
    return facts


def isa_level() -> str:
    """The ISA level the project's CPU kernels run here: ``avx512``, ``avx2`` or ``generic``.

    The loaded fused extension's own answer when this process has loaded it (it may have capped
    a level whose kernels disagreed with the portable one), else the level the CPU flags allow
    (the same rule as ``csrc/cpu_isa.h``: AVX-512 F/BW/VL/DQ, else AVX2 + FMA, else generic).
    """
    ops_module = sys.modules.get("backends.kernels.ops")
    ext = getattr(ops_module, "_EXT", None)
    if getattr(ext, "ops", None) is not None:
        try:
            return ISA_LEVELS[int(ext.ops.fused_isa())]
        except (AttributeError, RuntimeError, IndexError, ValueError):
            pass
    flags = set(cpu_facts()["flags"])
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        return "avx512"
    if {"avx2", "fma"} <= flags:
        return "avx2"
    return "generic"


def _ram_gib() -> float | None:
    try:
        for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _onednn_version() -> str | None:
    match = re.search(r"(?:oneDNN|MKL-DNN) v([\w.]+)", torch.__config__.show())
    return match.group(1) if match else None


def load_snapshot(scaling_threads: int | None = None) -> dict[str, Any]:
    """The machine's load now: 1-minute load average and the CPU jiffies of ``/proc/stat``
    (``steal`` and ``total``; the steal fraction over an interval is the difference of two
    snapshots' steal over the difference of their totals); with ``scaling_threads`` >= 2 also
    ``core_scaling`` (:func:`core_scaling` on that many threads) and ``core_scaling_threads``.
    Fields are None where not known."""
    snap: dict[str, Any] = {"load_avg_1m": None, "steal_jiffies": None, "total_jiffies": None}
    if scaling_threads is not None and scaling_threads >= 2:
        snap["core_scaling"] = core_scaling(scaling_threads)
        snap["core_scaling_threads"] = scaling_threads
    try:
        snap["load_avg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        line = pathlib.Path("/proc/stat").read_text().splitlines()[0]
        values = [int(v) for v in line.split()[1:]]
        snap["total_jiffies"] = sum(values)
        snap["steal_jiffies"] = values[7] if len(values) > 7 else 0
    except (OSError, ValueError, IndexError):
        pass
    return snap


def scaling_noise(snapshot: Mapping[str, Any], when: str) -> str | None:
    """Why a run is noisy from a :func:`load_snapshot` with ``core_scaling`` (the host gave
    less than :data:`backends.timing.CORE_SHARE_MIN` of the cores asked for), else None."""
    scaling, threads = snapshot.get("core_scaling"), snapshot.get("core_scaling_threads")
    if scaling is None or not threads or gave_cores(scaling, threads):
        return None
    return (
        f"the host gave {scaling:.2f} of {threads} cores at the {when} (a {threads}-thread "
        f"matmul ran {scaling:.2f}x its 1-thread speed; below "
        f"{CORE_SHARE_MIN:.0%} of {threads})"
    )


def steal_fraction(start: Mapping[str, Any], end: Mapping[str, Any]) -> float | None:
    """Fraction of CPU time stolen by the hypervisor between two :func:`load_snapshot`s."""
    try:
        total = end["total_jiffies"] - start["total_jiffies"]
        steal = end["steal_jiffies"] - start["steal_jiffies"]
    except (KeyError, TypeError):
        return None
    return round(steal / total, 4) if total > 0 else None


def identity() -> dict[str, Any]:
    """Everything a reader needs to know which machine made a number (JSON-able dict).

    Keys: ``cpu`` (model name), ``vendor``, ``family``, ``model``, ``stepping``, ``isa``
    (:func:`isa_level`), ``cores`` (``os.cpu_count()``), ``threads`` (torch intra-op threads),
    ``ram_gib``, ``arch``, ``torch``, ``onednn``, ``asv_name`` (:func:`asv_machine_name`).
    Load is not part of the identity: take :func:`load_snapshot` at start and end.
    """
    facts = cpu_facts()
    ident = {
        "cpu": facts["cpu"],
        "vendor": facts["vendor"],
        "family": facts["family"],
        "model": facts["model"],
        "stepping": facts["stepping"],
        "isa": isa_level(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "ram_gib": _ram_gib(),
        "arch": platform.machine(),
        "torch": torch.__version__,
        "onednn": _onednn_version(),
    }
    ident["asv_name"] = asv_machine_name(ident)
    return ident


def asv_machine_name(ident: Mapping[str, Any]) -> str:
    """A machine-class name for asv histories, e.g. ``amd-f25m17-avx512-2c``: vendor, CPU family
    and model, ISA level, cores. Two CPUs that differ in any of these never share a history."""
    vendor = _VENDORS.get(ident.get("vendor") or "", (ident.get("vendor") or "cpu").lower())
    vendor = re.sub(r"[^a-z0-9]+", "", vendor) or "cpu"
    fam = ident.get("family")
    mod = ident.get("model")
    fm = f"f{fam}m{mod}" if fam is not None and mod is not None else (ident.get("arch") or "x")
    return f"{vendor}-{fm}-{ident.get('isa', 'generic')}-{ident.get('cores') or 0}c"


def same_class(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two identities are one machine class (vendor, family, model, ISA, cores), where
    bitwise-identical training is expected. Unknown identities are never the same class."""
    if not a or not b:
        return False
    keys = ("vendor", "family", "model", "isa", "cores")
    if any(a.get(k) is None for k in keys):
        return False
    return all(a.get(k) == b.get(k) for k in keys)


_START: dict[str, Any] = {}
_END: dict[str, Any] = {}


def mark_start(scaling_threads: int | None = None) -> dict[str, Any]:
    """Take the run's start :func:`load_snapshot` now (a run calls this when it starts; records
    written later in this process carry it as ``host.load_start``); with ``scaling_threads``
    it includes :func:`core_scaling` (speed runs: whether the host gave the cores)."""
    _START.clear()
    _END.clear()
    _START.update(load_snapshot(scaling_threads))
    return dict(_START)


def mark_end() -> dict[str, Any]:
    """Take the run's end :func:`load_snapshot` now, with :func:`core_scaling` where the start
    had it (a run calls this when its measurements are done: the record it writes next carries
    it as ``host.load_end``, not a snapshot taken later)."""
    _END.clear()
    _END.update(load_snapshot(_START.get("core_scaling_threads")))
    return dict(_END)


def start_snapshot() -> dict[str, Any]:
    """The snapshot of :func:`mark_start`, else the one taken when this module was imported."""
    return dict(_START)


def host_fields(start: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a record's ``host`` gains: :func:`identity` (CPU vendor/family/model/stepping, ISA
    level, cores, threads, RAM, versions, ``asv_name``), ``load_start`` / ``load_end``
    (:func:`load_snapshot` at the start of the run and at :func:`mark_end`, else now) and
    ``steal_fraction`` between them."""
    start = dict(start) if start is not None else start_snapshot()
    end = dict(_END) if _END else load_snapshot()
    return {
        **identity(),
        "load_start": start,
        "load_end": end,
        "steal_fraction": steal_fraction(start, end),
    }


mark_start()  # a process that never marks its start: the import is the start
