"""Instruction counts of the hot calls, all from ONE valgrind (callgrind) process.

The deterministic regression signal of issue 19: wall time on a shared 2-core VM moves 2x,
callgrind's instruction count of one call moves far less than 1%. This file is both

- a script, run under valgrind by :func:`collect` (``valgrind --tool=callgrind
  --instr-atstart=no --collect-atstart=no python instruction_counts.py OUT``): it builds every
  case with the project's public APIs (``backends.create``, ``srigl.create_trainer``) of the
  code it imports and warms each up (uninstrumented), starts instrumentation once, then counts
  ONE call of each between callgrind client requests (collection on, call, collection off and
  dump) and writes ``OUT/cases.json`` (the dump order and the skipped cases with reasons);
- the library that runs it and reads the dumps back (:func:`collect`, :func:`read_counts`),
  used by ``bench_counts.InstructionCount.setup_cache`` (asv, once per commit) and by
  ``suite.perf_compare`` (BASE and HEAD).

Counts are taken on one thread (``torch.set_num_threads(1)``, ``OMP_NUM_THREADS=1``): valgrind
serialises threads, so an OpenMP worker's spin-wait would be counted as instructions. The
fused kernel runs its static variant rule (``SRIGL_TUNE=off``): the autotuner picks variants by
wall time, which would make the count depend on the load of the machine.

What a count is comparable with: the same case list in the same order, on the same machine
class and valgrind version. Valgrind 3.19 emulates no AVX-512, so under it the kernels (and
oneDNN) dispatch to their AVX2 code: the counts track the AVX2 paths on every x86 machine. A
case's count depends slightly on what ran before it in the process (allocator and dispatcher
state: the tiny ``smoke`` case moved 3% between a run alone and a run after the others), so
``perf-compare`` runs one list on both sides and asv runs all cases in every commit.

It imports only the standard library at module level (asv imports it while discovering
benchmarks, and it must run as a plain script under valgrind).
"""

from __future__ import annotations

import ctypes
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

#: bump when a case's workload changes (the asv benchmark's ``version`` follows it)
WORKLOAD_VERSION = "1"
MANIFEST = "cases.json"
OUT_PREFIX = "callgrind.out"
WARMUP_CALLS = 2
FUSED_SHAPES = {"fc1": (768, 3072), "fc2": (3072, 768)}  # ViT-B/16 MLP: in -> out
FUSED_POINTS = ((0.9, 1), (0.9, 197), (0.9, 256), (0.99, 1))  # (sparsity, batch)
BACKEND_POINT = ("fc1", 0.9, 1)  # every other backend: one shape, sparsity, batch
TRAINERS = ("dense", "rigl", "srigl")
UPDATE_TRAINERS = ("rigl", "srigl")
NEVER = 10**9  # a delta_t no case reaches: trainer.step() never updates the topology
#: backends whose code valgrind cannot run: their case is a skip with this reason
UNCOUNTABLE = {
    "compiled": (
        "torch.compile generates code for the host CPU (AVX-512 on the reference VM), which "
        "valgrind 3.19 cannot execute (SIGILL ends the whole counting process)"
    ),
}

_HELPER_C = r"""
#include <valgrind/callgrind.h>
void srigl_cg_instrument(void) { CALLGRIND_START_INSTRUMENTATION; }
void srigl_cg_toggle(void) { CALLGRIND_TOGGLE_COLLECT; }
void srigl_cg_toggle_and_dump(void) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS; }
"""


class CountError(RuntimeError):
    """Instruction counting could not run here (no valgrind, no compiler, a failed run)."""


# --------------------------------------------------------------------------- the cases


def fused_case_names() -> list[str]:
    """``fused/<fc1|fc2>/<sparsity>/b<batch>`` for the ViT-B/16 MLP grid."""
    return [f"fused/{s}/{p}/b{b}" for s in FUSED_SHAPES for p, b in FUSED_POINTS]


def case_names(backend_names: Sequence[str]) -> list[str]:
    """Every case, in the order they are counted: ``smoke`` (a tiny dense layer, for CI), the
    fused grid, ``backend/<name>`` for each other backend in ``backend_names``,
    ``step/<trainer>`` (digits MLP) and ``update/<trainer>`` (one topology update)."""
    shape, sparsity, batch = BACKEND_POINT
    others = [f"backend/{b}/{shape}/{sparsity}/b{batch}" for b in backend_names if b != "fused"]
    return [
        "smoke",
        *fused_case_names(),
        *others,
        *(f"step/{t}" for t in TRAINERS),
        *(f"update/{t}" for t in UPDATE_TRAINERS),
    ]


def _layer_calls(
    backend: str, in_f: int, out_f: int, sparsity: float, batch: int
) -> tuple[Callable[[], None], Callable[[], None]]:
    """One forward of ``backend`` on a constant fan-in layer [out_f, in_f] (seeded), and one of
    the masked dense ``F.linear`` of the same layer and input (the wall-time baseline)."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    backends = importlib.import_module("backends")
    masks = importlib.import_module("srigl.masks")
    ok, why = backends.available(backend, "cpu")
    if not ok:
        raise NotImplementedError(f"backend {backend!r} unavailable on cpu: {why}")
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(out_f, in_f, generator=gen) / in_f**0.5
    mask = masks.constant_fan_in_mask((out_f, in_f), sparsity, gen)
    bias = torch.randn(out_f, generator=gen) * 0.01
    layer = backends.create(backend, weight, mask, bias, layer_name=f"{in_f}x{out_f}")
    x = torch.randn(batch, in_f, generator=torch.Generator().manual_seed(1))
    masked = weight * mask

    def call() -> None:
        with torch.inference_mode():
            layer(x)

    def dense() -> None:
        with torch.inference_mode():
            F.linear(x, masked, bias)

    return call, dense


def _layer_call(backend: str, in_f: int, out_f: int, sparsity: float, batch: int) -> Callable:
    """One forward of ``backend`` on a constant fan-in layer [out_f, in_f] (seeded)."""
    return _layer_calls(backend, in_f, out_f, sparsity, batch)[0]


def layer_case(name: str) -> tuple[str, int, int, float, int] | None:
    """(backend, in, out, sparsity, batch) of a layer case (``fused/...``, ``backend/...``)."""
    parts = name.split("/")
    if parts[0] == "fused" and len(parts) == 4:
        return ("fused", *FUSED_SHAPES[parts[1]], float(parts[2]), int(parts[3][1:]))
    if parts[0] == "backend" and len(parts) == 5:
        return (parts[1], *FUSED_SHAPES[parts[2]], float(parts[3]), int(parts[4][1:]))
    return None


def wall_ratios(names: Sequence[str], pairs: int = 10, block_seconds: float = 0.02) -> dict:
    """Speed-up of each layer case over its masked dense ``F.linear`` (one thread), from the
    suite's one paired protocol (:func:`backends.timing.paired_ratio` of the code under test):
    ``{"wall": {case: [speedup, ci_low, ci_high]}, "wall_skipped": {case: reason}}``. Cases
    that are no layer call (steps, updates) are left out; a tree without the paired timer gives
    every layer case a reason instead."""
    out: dict[str, dict] = {"wall": {}, "wall_skipped": {}}
    try:
        timing = importlib.import_module("backends.timing")
    except ImportError as err:
        why = f"no paired timer at this commit ({err})"
        out["wall_skipped"] = {n: why for n in names if layer_case(n)}
        return out
    for name in names:
        spec = layer_case(name)
        if spec is None:
            continue
        try:
            call, dense = _layer_calls(*spec)
        except NotImplementedError as err:
            out["wall_skipped"][name] = str(err)
            continue
        ratio = timing.paired_ratio(
            call, dense, pairs=pairs, block_seconds=block_seconds, threads=1
        )
        out["wall"][name] = [ratio.speedup, ratio.ci_low, ratio.ci_high]
    return out


def _digits_step(trainer_name: str, delta_t: int, count_update_only: bool) -> Callable:
    """A training step of the digits MLP 64-512-512-10 at 90% (batch 128), or with
    ``count_update_only`` the ``trainer.step()`` alone after a forward/backward/SGD step."""
    import torch
    from torch import nn

    torch.set_num_threads(1)
    srigl = importlib.import_module("srigl")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = srigl.create_trainer(
        trainer_name,
        model,
        optimizer,
        sparsity=0.9,
        distribution="erk",
        total_steps=10 * NEVER,
        delta_t=delta_t,
    )
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(128, 64, generator=gen)
    y = torch.randint(0, 10, (128,), generator=gen)
    loss = nn.CrossEntropyLoss()

    def backward_and_sgd() -> None:
        optimizer.zero_grad()
        loss(model(x), y).backward()
        optimizer.step()

    def step() -> None:
        backward_and_sgd()
        trainer.step()

    if not count_update_only:
        return step
    return _Prepared(backward_and_sgd, trainer.step)


class _Prepared:
    """A counted call ``counted`` that needs ``prepare`` run (uncounted) just before it."""

    def __init__(self, prepare: Callable[[], None], counted: Callable[[], None]) -> None:
        self.prepare, self.counted = prepare, counted

    def __call__(self) -> None:
        self.prepare()
        self.counted()


def _probe(target: str) -> Callable[[], None]:
    """``module:function`` of the code under test, called without arguments (a case that
    needs no torch: the perf-compare test's tiny repository uses it)."""
    module, _, function = target.partition(":")
    try:
        fn = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as err:
        raise NotImplementedError(f"probe {target!r} not found at this commit: {err}") from None
    return fn


def build_case(name: str) -> Callable[[], None]:
    """The zero-argument call that case ``name`` counts (see :func:`case_names`; also
    ``probe/<module>:<function>``, any function of the code under test).

    Raises:
        NotImplementedError: the case cannot run at this commit or on this CPU (skipped).
        ValueError: ``name`` is no known case.
    """
    parts = name.split("/")
    if name == "smoke":
        return _layer_call("dense", 64, 32, 0.5, 1)
    layer = layer_case(name)
    if layer is not None:
        return _layer_call(*layer)
    if parts[0] == "step" and len(parts) == 2:
        return _digits_step(parts[1], NEVER, count_update_only=False)
    if parts[0] == "update" and len(parts) == 2:
        return _digits_step(parts[1], 1, count_update_only=True)
    if parts[0] == "probe" and len(parts) == 2 and ":" in parts[1]:
        return _probe(parts[1])
    raise ValueError(
        f"unknown instruction-count case {name!r}; allowed: smoke, fused/<fc1|fc2>/<sparsity>/"
        "b<batch>, backend/<name>/<fc1|fc2>/<sparsity>/b<batch>, step/<trainer>, "
        "update/<trainer>, probe/<module>:<function>"
    )


# --------------------------------------------------------------------------- under valgrind


class _Callgrind:
    """Callgrind client requests from a tiny C helper compiled into a folder
    (``valgrind/callgrind.h``); outside valgrind they are no-ops."""

    def __init__(self, workdir: Path) -> None:
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            raise CountError("no C compiler (cc/gcc) for the callgrind client-request helper")
        src, lib = workdir / "cg_helper.c", workdir / "cg_helper.so"
        src.write_text(_HELPER_C, encoding="utf-8")
        cmd = [cc, "-O1", "-shared", "-fPIC", str(src), "-o", str(lib)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            first = (proc.stderr.strip().splitlines() or ["?"])[0]
            raise CountError(f"cannot build the callgrind helper with {cc}: {first}")
        helper = ctypes.CDLL(str(lib))
        self.instrument = helper.srigl_cg_instrument
        self.toggle = helper.srigl_cg_toggle
        self.toggle_and_dump = helper.srigl_cg_toggle_and_dump


def count_cases(names: Sequence[str], out_dir: Path) -> dict[str, Any]:
    """Count one call of each case (the worker's body; run under valgrind).

    Every case is built and warmed up first, uninstrumented (valgrind runs that part several
    times faster); then instrumentation starts, once (stopping it again discards callgrind's
    per-block costs, which corrupts later dumps), and each case runs once more uncounted and
    once counted, between ``CALLGRIND_TOGGLE_COLLECT``s, followed by a dump.

    Returns (and writes to ``out_dir/cases.json``) ``{"dumped": [names in dump order],
    "skipped": {name: reason}}``.
    """
    callgrind = _Callgrind(out_dir)
    ready: dict[str, Callable[[], None]] = {}
    skipped: dict[str, str] = {}
    for name in names:
        parts = name.split("/")
        if parts[0] == "backend" and len(parts) > 1 and parts[1] in UNCOUNTABLE:
            skipped[name] = f"not counted: {UNCOUNTABLE[parts[1]]}"
            continue
        try:
            call = build_case(name)
            for _ in range(WARMUP_CALLS):
                call()
        except NotImplementedError as err:
            skipped[name] = str(err)
            continue
        except Exception as err:  # a case broken at this commit: recorded, the rest go on
            skipped[name] = f"error: {type(err).__name__}: {err}"
            continue
        ready[name] = call
    callgrind.instrument()
    for call in ready.values():
        call()  # the same state for every case: caches and allocator warm under instrumentation
        prepare = call.prepare if isinstance(call, _Prepared) else None
        counted = call.counted if isinstance(call, _Prepared) else call
        if prepare is not None:
            prepare()
        callgrind.toggle()
        counted()
        callgrind.toggle_and_dump()
    manifest = {"dumped": list(ready), "skipped": skipped}
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return manifest


def read_counts(out_dir: Path) -> dict[str, Any]:
    """Instruction counts from a finished run in ``out_dir``: ``{"counts": {case: int},
    "skipped": {case: reason}}``. Dump ``k`` (callgrind's ``<out>.<k>``, in order) is the
    ``k``-th counted case; its ``summary:`` line is the count (``totals:`` is cumulative).

    Raises:
        CountError: the manifest or a dump is missing or unreadable.
    """
    manifest_path = Path(out_dir) / MANIFEST
    if not manifest_path.is_file():
        raise CountError(f"no {MANIFEST} in {out_dir}: the counting run did not finish")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    dumps = sorted(
        Path(out_dir).glob(f"{OUT_PREFIX}.*"),
        key=lambda p: int(p.name.rsplit(".", 1)[1]) if p.name.rsplit(".", 1)[1].isdigit() else 0,
    )
    dumps = [p for p in dumps if p.name.rsplit(".", 1)[1].isdigit()]
    if len(dumps) != len(manifest["dumped"]):
        raise CountError(
            f"{len(dumps)} callgrind dumps in {out_dir} for {len(manifest['dumped'])} cases"
        )
    counts = {}
    for name, dump in zip(manifest["dumped"], dumps, strict=True):
        match = re.search(r"^summary:\s*(\d+)", dump.read_text(), re.MULTILINE)
        if match is None:
            raise CountError(f"no summary line in callgrind dump {dump}")
        counts[name] = int(match.group(1))
    return {"counts": counts, "skipped": manifest["skipped"]}


def collect(
    names: Sequence[str],
    python: str = sys.executable,
    pythonpath: Sequence[str] = (),
    cwd: Path | None = None,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Count ``names`` in ONE valgrind process of ``python`` (with ``pythonpath`` first on its
    path, e.g. a git worktree of another commit) and return :func:`read_counts`'s dict plus
    ``"seconds"`` (wall time of the valgrind run).

    Raises:
        CountError: valgrind is not installed, or the run failed (its last stderr line).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise CountError("valgrind is not installed (apt-get install valgrind)")
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", SRIGL_TUNE="off", PYTHONHASHSEED="0")
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*pythonpath, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    with tempfile.TemporaryDirectory(prefix="srigl-callgrind-") as tmp:
        out = Path(tmp)
        cmd = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--collect-atstart=no",
            f"--callgrind-out-file={out / OUT_PREFIX}",
            python,
            str(Path(__file__).resolve()),
            str(out),
            *names,
        ]
        began = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise CountError(f"the callgrind run exceeded {timeout:.0f} s") from None
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            raise CountError(f"callgrind run failed (exit {proc.returncode}): {tail}")
        result = read_counts(out)
    result["seconds"] = round(time.perf_counter() - began, 1)
    return result


def available_backend_names() -> list[str]:
    """The backends registered in the importable ``backends`` package (``[]`` if none)."""
    try:
        backends = importlib.import_module("backends")
    except ImportError:
        return []
    names = getattr(backends, "names", None)
    return list(names()) if callable(names) else []


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry (under valgrind): ``instruction_counts.py OUT_DIR [CASE ...]``; no cases
    means every case of :func:`case_names`. ``instruction_counts.py --wall OUT_JSON CASE ...``
    (no valgrind) writes :func:`wall_ratios` of the cases instead."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--wall"] and len(args) >= 2:
        result = wall_ratios(args[2:])
        Path(args[1]).write_text(json.dumps(result, indent=1), encoding="utf-8")
        return 0
    if not args:
        print("usage: instruction_counts.py [--wall OUT_JSON] OUT_DIR [CASE ...]", file=sys.stderr)
        return 2
    out_dir, names = Path(args[0]), args[1:] or case_names(available_backend_names())
    count_cases(names, out_dir)
    return 0


def summarize(result: Mapping[str, Any]) -> str:
    """One line per case: ``name  count`` or ``name  skipped: reason``."""
    lines = [f"{k:40s} {v:>14,d}" for k, v in result.get("counts", {}).items()]
    lines += [f"{k:40s} skipped: {v}" for k, v in result.get("skipped", {}).items()]
    return "\n".join(lines)


if __name__ == "__main__":
    if (
        not sys.flags.safe_path
        and sys.path
        and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent
    ):
        sys.path.pop(0)  # the script's folder is no package root; the project comes from the path
    raise SystemExit(main())
