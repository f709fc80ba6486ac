"""``dense_kernel``: a hand-written dense Linear kernel, the dense baseline of the same effort as
the ``fused`` condensed kernel (Linear only; no Conv2d module).

The C++ operator ``srigl_dense::dense_linear`` (``backends/kernels/csrc/dense_*``, its own
extension ``srigl_dense_ext`` built by :class:`backends.kernels.build.Extension`) runs on a
weight packed once, when the layer is built or loaded, into panels of 32 output rows
([ceil(out / 32), in + 1, 32] float32, the bias last), and computes 32-row vectors of the
output for a few batch rows at a time, so the weights stream contiguously and no horizontal
sums are needed. Micro-kernels for generic x86-64, AVX2+FMA and AVX-512F, chosen at run time
for the CPU at hand (``SRIGL_ISA=generic|avx2`` caps it, as for ``fused``); the extension's
work-claiming pool (``csrc/work_pool.h``, torch's thread count) splits the output panels:

- ``gemv`` (batch 1-2; AVX-512 1-4): the whole panel for up to 2 (4) batch rows per pass,
  with 2-4 accumulator sets over consecutive inputs (8 independent FMA chains at batch 1);
- ``tile`` (larger batch): a register tile of 16 (AVX2) / 32 (AVX-512) rows x 6 / 12 batch
  rows; the panel stays in L2 while every batch row passes over it;
- ``tilekb`` (larger batch, in > 512): the same, 256 inputs at a time (the panel's chunk
  stays in L1).

Which variant runs is decided by measurement, as for ``fused``: on the first call of a batch
bucket (1, 2, 3-4, ..., 129-256, ...) and thread count, :func:`tune_variant` times the three
families, serial and parallel, at the best ISA level on an input of that batch (interleaved
rounds, fastest call) and keeps the winner in the layer and in a per-machine JSON cache
(``<cache dir>/tuner/dense-<machine>.json``, :class:`backends.kernels.tune_cache.TuneCache`).
``SRIGL_TUNE=off`` (read at import) runs the static rule (``srigl_dense::dense_static_variant``:
gemv up to 2 (AVX-512: 4) rows, else ``tilekb`` above 512 inputs, else ``tile``; parallel with
more than one thread); so does ``torch.compile``. Every variant can be run by code
(:func:`linear_variant`, :func:`variants_here`). The
operator has a fake (meta) implementation, so ``torch.compile`` and ``torch.export`` see one
op. float32 on CPU only: other dtypes and devices are refused by ``supports``/``available``
with the reason. The extension also holds the machine probes of ``suite/bench/roofline.py``.
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from backends import BACKENDS
from backends.base import Backend, BadInputError
from backends.conv import declare_no_conv
from backends.dense import MaskedDenseForm
from backends.hot_path import BELOW_AUTOGRAD, raw_op
from backends.kernels.build import Extension, KernelUnavailableError
from backends.kernels.parallel_mode import on_team
from backends.kernels.selfcheck import check_isa_levels
from backends.kernels.tune_cache import (
    TuneCache,
    bucket_of,
    fastest_interleaved,
    machine_key,
    time_while_given,
    tuned_under_load,
    tuning_enabled,
)

log = logging.getLogger(__name__)

CSRC = pathlib.Path(__file__).with_name("kernels") / "csrc"
SOURCES = [
    CSRC / "dense_op.cpp",
    CSRC / "work_pool.cpp",
    CSRC / "dense_generic.cpp",
    CSRC / "dense_avx2.cpp",
    CSRC / "dense_avx512.cpp",
    CSRC / "dense_impl.h",
    CSRC / "dense_kernels.h",
    CSRC / "simd.h",
    CSRC / "cpu_isa.h",
    CSRC / "work_pool.h",
]
ISAS = ("generic", "avx2", "avx512")
FAMILIES = ("gemv", "tile", "tilekb")
PANEL = 32

TUNE_SCHEMA = 2  # 2: timed on the work-claiming pool (1: OpenMP)
TUNE_ROUNDS = 5
TUNE_ROUND_SECONDS = 2e-3
_TUNE_CACHE = TuneCache("dense", TUNE_SCHEMA, "dense-kernel tuning")
_TUNE = [tuning_enabled()]  # SRIGL_TUNE, read at import (refresh_tuning reads it again)

_failures: list[str] = []
_OPS: dict = {}  # "variant": torch.ops.srigl_dense.dense_linear_variant (the raw operator)


def _setup(ops: Any) -> None:
    _register_fakes()
    _self_check(ops)


EXTENSION = Extension(
    "srigl_dense_ext", SOURCES, "srigl_dense", setup=_setup, label="the dense C++ kernel"
)


def load() -> Any:
    """``torch.ops.srigl_dense`` (built on first use, cached per machine).

    Raises:
        KernelUnavailableError: no compiler or ninja, a failed build (first error line).
    """
    return EXTENSION.load()


def encode(isa: str, family: str, parallel: bool = True) -> int:
    """The variant code of (isa, family, parallel): ``isa * 1000 + family * 100 + parallel``."""
    return ISAS.index(isa) * 1000 + FAMILIES.index(family) * 100 + int(parallel)


def variant_name(code: int) -> str:
    """A readable name of a variant code, e.g. ``avx2/tile/par``."""
    return f"{ISAS[code // 1000]}/{FAMILIES[code // 100 % 10]}/{'par' if code % 10 else 'ser'}"


def variants_here() -> list[int]:
    """Every variant code that runs on this CPU (at the ISA level in force)."""
    ops = load()
    codes = [isa * 1000 + fam * 100 + par for isa in range(3) for fam in range(3) for par in (0, 1)]
    return [c for c in codes if ops.dense_runs_here(c)]


def self_check_failures() -> list[str]:
    """Variants that disagreed with ``F.linear`` when the extension loaded (their ISA level is
    then switched off in this process); empty when every level passed."""
    return list(_failures)


def linear_variant(
    x: torch.Tensor, pack: torch.Tensor, out_features: int, code: int
) -> torch.Tensor:
    """Run variant ``code`` on x float32 [..., in] with a pack of :func:`pack_weight`; returns
    float32 [..., out_features]."""
    return load().dense_linear_variant(x, pack, out_features, code)


def pack_weight(weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """weight float32 [out, in] and bias float32 [out] -> pack float32 [ceil(out/32), in+1, 32]."""
    return load().dense_pack(weight.contiguous(), bias.contiguous())


def refresh_tuning() -> None:
    """Read ``SRIGL_TUNE`` again (after changing the environment in-process)."""
    _TUNE[0] = tuning_enabled()


def candidates(threads: int) -> list[int]:
    """The variant codes the tuner times: every family at the best ISA level here, serial and
    (with more than one thread) parallel."""
    isa = int(load().dense_isa())
    pars = (0, 1) if threads > 1 else (0,)
    return [isa * 1000 + fam * 100 + par for fam in range(len(FAMILIES)) for par in pars]


def tune_variant(
    pack: torch.Tensor, in_features: int, out_features: int, batch: int, threads: int
) -> int:
    """The fastest variant for a layer ``in_features -> out_features`` (its ``pack``) at
    ``batch`` rows on ``threads`` threads: from this machine's cache, else timed (the
    candidates interleaved over rounds, fastest call) and cached. As in the fused tuner
    (:mod:`backends.kernels.linear_tuner`), an entry timed on a machine busier than its cores is
    timed again when it is quiet (:func:`backends.kernels.tune_cache.tuned_under_load`), and
    one whose variant is not a candidate here is dropped with a warning."""
    ops = load()
    cands = candidates(threads)
    machine = machine_key(ISAS[int(ops.dense_isa())], threads)
    key = f"{in_features}x{out_features}:b{bucket_of(batch)}"
    with _TUNE_CACHE.lock:
        _, entries = _TUNE_CACHE.entries(machine)
        hit = entries.get(key)
        if hit is not None and not (isinstance(hit, dict) and hit.get("variant") in cands):
            _TUNE_CACHE.drop(machine, key, f"entry {hit!r} names no variant of {cands}")
        elif hit is not None and not tuned_under_load(hit, threads):
            return int(hit["variant"])
    x = torch.randn(max(batch, 1), in_features)
    fns = {c: (lambda c=c: ops.dense_linear_variant(x, pack, out_features, c)) for c in cands}

    def timed() -> dict[int, float]:
        with torch.inference_mode(), on_team(ops.dense_pool_set_mode):  # (parallel_mode)
            return fastest_interleaved(fns, TUNE_ROUNDS, TUNE_ROUND_SECONDS)

    best, host = time_while_given(timed, threads, lambda code: code % 10 == 1)  # parallel bit
    code = min(best, key=best.__getitem__)
    with _TUNE_CACHE.lock:
        _, entries = _TUNE_CACHE.entries(machine)
        entries[key] = {
            "variant": code,
            "name": variant_name(code),
            "seconds": best[code],
            **host,
        }
        _TUNE_CACHE.save(machine)
    return code


def _self_check(ops: Any) -> None:
    """Run every variant of each SIMD level this CPU has on a small odd layer against
    ``F.linear``; a level that disagrees is capped off with a warning (a kernel bug on a CPU
    the tests never ran on then costs speed, not correct results)."""
    g = torch.Generator().manual_seed(0)
    in_f, out_f = 523, 45  # a partial panel, a partial input chunk
    w = torch.randn(out_f, in_f, generator=g)
    b = torch.randn(out_f, generator=g)
    pack = ops.dense_pack(w, b)

    def disagreeing(level: int) -> list[str]:
        bad = []
        for batch in (1, 2, 3, 5, 13, 29):
            x = torch.randn(batch, in_f, generator=g)
            ref = torch.nn.functional.linear(x, w, b)
            for fam in range(len(FAMILIES)):
                for par in (0, 1):
                    code = level * 1000 + fam * 100 + par
                    y = ops.dense_linear_variant(x, pack, out_f, code)
                    if not torch.allclose(y, ref, rtol=1e-4, atol=1e-3):
                        bad.append(f"{variant_name(code)} batch {batch}")
        return bad

    named = {"isas": ISAS, "kernel": "dense", "reference": "F.linear", "log": log}
    check_isa_levels(
        int(ops.dense_detected_isa()), disagreeing, ops.dense_cap_isa, _failures, **named
    )


def _register_fakes() -> None:
    """Shape functions of the operators for FakeTensor tracing (compile, export)."""
    if getattr(_register_fakes, "done", False):
        return

    @torch.library.register_fake("srigl_dense::dense_linear")
    def _(x, pack, out_features):
        return x.new_empty((*x.shape[:-1], out_features))

    @torch.library.register_fake("srigl_dense::dense_linear_variant")
    def _(x, pack, out_features, variant):
        return x.new_empty((*x.shape[:-1], out_features))

    @torch.library.register_fake("srigl_dense::dense_pack")
    def _(weight, bias):
        np_ = (weight.shape[0] + PANEL - 1) // PANEL
        return weight.new_empty((np_, weight.shape[1] + 1, PANEL))

    _register_fakes.done = True


@BACKENDS.register("dense_kernel")
class DenseKernelLinear(MaskedDenseForm, Backend):
    """The masked weight [out, in] stored dense, run by the hand-written C++ dense kernel
    (module docstring); float32 on CPU. ``pack`` (non-persistent) is the panel-packed weight
    float32 [ceil(out/32), in+1, 32], rebuilt from ``weight``/``bias`` on load, copy and ``to()``.
    """

    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32,)
    dense_baseline: ClassVar[bool] = True

    pack: torch.Tensor

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """``(True, "")`` on CPU where the extension builds or is cached, else why not."""
        ok, why = super().available(device)
        if not ok:
            return ok, why
        return EXTENSION.available()

    def _after_load(self) -> None:
        weight, bias = self._buffers["weight"], self._buffers["bias"]
        if weight.device.type == "cpu" and weight.dtype == torch.float32:
            packed = pack_weight(weight, bias)
            _OPS.setdefault("variant", raw_op(load().dense_linear_variant.default))
        else:  # moved to a device/dtype the kernel does not run: forward refuses
            packed = weight.new_empty(0)
        self.register_buffer("pack", packed, persistent=False)
        self._pack = packed  # the same tensor, for the eager hot path
        self._runs = packed.dim() == 3
        self._variants: dict[tuple[int, int], int] = {}  # (threads, bucket) -> variant code
        self._codes: dict[tuple[int, int], int] = {}  # (threads, rows) -> variant code

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_pack", None)
        return state

    def variant_code(self, batch: int, threads: int | None = None) -> int:
        """The variant code run for ``batch`` rows on ``threads`` threads (default: torch's):
        tuned on first use of its bucket (module docstring), the static rule where tuning is
        off or the batch is empty."""
        threads = int(threads or torch.get_num_threads())
        slot = (threads, bucket_of(batch))
        code = self._variants.get(slot)
        if code is None:
            if batch == 0 or self.in_features == 0:
                return int(load().dense_static_variant(batch, self.in_features))
            if _TUNE[0]:
                code = tune_variant(self.pack, self.in_features, self.out_features, batch, threads)
            else:  # the static rule's choice is the same across a bucket: keep it too
                code = int(load().dense_static_variant(batch, self.in_features))
            self._variants[slot] = code
        return code

    def variant_for(self, batch: int) -> str:
        """The variant run for ``batch`` rows of x, e.g. ``avx2/gemv/par``."""
        return variant_name(self.variant_code(batch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float32 [..., in] (any strides) -> float32 [..., out].

        The lean eager path of :mod:`backends.hot_path`, as for ``fused``: the input checked in
        full only where the quick test fails, plain references, the variant of (threads, rows)
        from a dict, the raw operator below the autograd key. Where x needs a gradient (the
        kernel has no backward) the masked dense weight runs through ``F.linear`` instead.
        """
        try:
            runs = self._runs and x.dtype == torch.float32 and x.is_cpu
        except AttributeError:  # not a tensor: check_input names it (a try costs nothing)
            runs = False
        if not runs:
            self._refuse(x)
        if x.dim() == 0 or x.shape[-1] != self.in_features:
            self.check_input(x)
        if torch.compiler.is_compiling():  # one op in the graph: the static rule
            return torch.ops.srigl_dense.dense_linear(x, self.pack, self.out_features)
        if x.requires_grad and torch.is_grad_enabled():
            # the kernel has no backward formula: the masked dense form, differentiable in x
            return F.linear(x, self._buffers["weight"], self._buffers["bias"])
        rows = x.shape[0] if x.dim() == 2 else x.numel() // max(self.in_features, 1)
        code = self._codes.get((torch.get_num_threads(), rows))
        if code is None:
            code = self._first_use(rows)
        with BELOW_AUTOGRAD():  # x needs no gradient here (checked above)
            return _OPS["variant"](x, self._pack, self.out_features, code)

    def _first_use(self, rows: int) -> int:
        """The variant code for ``rows`` rows on torch's threads (:meth:`variant_code`),
        remembered per (threads, rows) for the hot path."""
        threads = torch.get_num_threads()
        code = self.variant_code(rows, threads)
        if len(self._codes) > 4096:  # many distinct batch sizes: forget, stay small
            self._codes.clear()
        self._codes[(threads, rows)] = code
        return code

    def _refuse(self, x: torch.Tensor) -> None:
        """Raise :class:`BadInputError` for an input the kernel does not run: x not a float32
        CPU tensor of the layer's shape, or a layer not float32 on CPU."""
        self.check_input(x)
        raise BadInputError(
            f"layer {self.layer_name!r}: dense_kernel runs float32 on cpu, the layer is "
            f"{self.dtype} on {self.device}"
        )


declare_no_conv("dense_kernel", "the hand-written dense kernel is Linear only")

__all__ = [
    "DenseKernelLinear",
    "KernelUnavailableError",
    "candidates",
    "encode",
    "linear_variant",
    "load",
    "pack_weight",
    "refresh_tuning",
    "self_check_failures",
    "tune_variant",
    "variant_name",
    "variants_here",
]
