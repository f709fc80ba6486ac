"""asv's machine for this computer, from :func:`suite.machine.identity`: its name and the
``asv machine`` arguments that put cpu, arch, num_cpu, ram and os into ``machine.json``::

    python -m suite.asv_machine --name    # amd-f25m17-avx512-2c
    python -m suite.asv_machine --args    # --cpu '...' --arch x86_64 --num_cpu 2 --ram ...
    python -m suite.asv_machine --complete NAME   # fill what `asv machine` left out

The Makefile's asv targets use them (``ASV_MACHINE`` stays overridable), so histories of
different CPUs never share a machine name. ``asv machine --yes`` stores only the options that
differ from its own defaults (arch, num_cpu and os usually equal them and are dropped), so
``--complete`` writes every field into asv's machine file (``~/.asv-machine.json``), from
which ``asv run`` copies ``machine.json``.
"""

from __future__ import annotations

import argparse
import platform
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

#: results recorded before machine identity existed, on two different CPUs (see machine.json)
UNKNOWN_MIXED = "unknown-mixed-cpus-2c"


def machine_args(ident: Mapping[str, Any]) -> list[str]:
    """``asv machine`` options describing ``ident`` (a :func:`suite.machine.identity` dict).

    ``--cpu`` holds the model name with vendor family/model/stepping and the ISA level the
    kernels run, e.g. ``AMD EPYC (AuthenticAMD family 25 model 17 stepping 1, avx512)``.
    """
    cpu = (
        f"{ident.get('cpu') or 'unknown'} ({ident.get('vendor') or 'unknown vendor'} "
        f"family {ident.get('family')} model {ident.get('model')} "
        f"stepping {ident.get('stepping')}, {ident.get('isa') or 'generic'})"
    )
    ram = f"{ident['ram_gib']}GiB" if ident.get("ram_gib") is not None else "unknown"
    return [
        "--cpu",
        cpu,
        "--arch",
        str(ident.get("arch") or platform.machine() or "unknown"),
        "--num_cpu",
        str(ident.get("cores") or 0),
        "--ram",
        ram,
        "--os",
        f"{platform.system()} {platform.release()}".strip() or "unknown",
    ]


def complete_machine_file(name: str, ident: Mapping[str, Any], path: str | None = None) -> dict:
    """Add every field of :func:`machine_args` that asv's entry ``name`` lacks to asv's machine
    file (``path``, default ``~/.asv-machine.json``), through asv's own reader and writer.

    Returns:
        the entry as saved.
    """
    from asv.machine import MachineCollection

    try:
        entry = dict(MachineCollection.load(name, _path=path))
    except Exception:  # asv raises UserError for a missing file or entry: start afresh
        entry = {}
    args = machine_args(ident)
    for option, value in zip(args[::2], args[1::2], strict=True):
        entry.setdefault(option.lstrip("-"), value)
    entry["machine"] = name
    MachineCollection.save(name, entry, _path=path)
    return entry


def main(argv: Sequence[str] | None = None) -> int:
    """Print the machine name (``--name``) or the shell-quoted ``asv machine`` options, or
    complete asv's machine entry (``--complete NAME``)."""
    parser = argparse.ArgumentParser(prog="python -m suite.asv_machine", description=__doc__)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--name", action="store_true", help="the asv machine name")
    what.add_argument("--args", action="store_true", help="asv machine --cpu/--arch/... options")
    what.add_argument("--complete", metavar="NAME", help="fill asv's machine entry NAME")
    args = parser.parse_args(argv)
    from suite.machine import identity

    ident = identity()
    if args.complete:
        complete_machine_file(args.complete, ident)
    else:
        print(ident["asv_name"] if args.name else shlex.join(machine_args(ident)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
