"""The ``srigl::fused_*`` C++ operators: built on first use, with fake (meta) implementations so
``torch.compile`` keeps them in the graph and ``torch.export`` traces them.

``load()`` builds/imports the extension (see :mod:`backends.kernels.build`) and returns
``torch.ops.srigl``; it raises :class:`KernelUnavailableError` with the reason where that is
impossible, and remembers the outcome for the process.

Variants: ``code = isa * 1000 + family * 100 + wide * 10 + parallel`` with isa 0 generic /
1 avx2 / 2 avx512, family 0 rows (gathers) / 1 perm (permute pack) / 2 tiled / 3 tiledkb
(tiled, input chunk by input chunk so that the tile's chunk stays in L1) / 4 nm (N:M layers
only: the pack keeps, per kept weight, its 4-bit offset within its group of M inputs, the group
following from the position; SIMD levels gather a vector of kept inputs per step), ``wide``
= the tiled kernels' width (:data:`WIDTHS`: 0 four vector accumulators per neuron, 1 eight,
2 two; a tile holds that many vectors of batch columns). :func:`encode` and
:func:`decode` are the one Python place that knows this code (``csrc/fused_variant.h`` the
one C++ place).

Autograd: ``srigl::fused_linear`` has a backward (registered with ``torch.library``, so
``torch.compile`` still sees one op): the gradient with respect to ``x`` is the transposed
condensed product (``srigl::fused_linear_backward``); the packed blob has no gradient.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import NamedTuple

import torch

from backends.kernels.build import Extension, KernelUnavailableError
from backends.kernels.selfcheck import check_isa_levels

log = logging.getLogger(__name__)

CSRC = pathlib.Path(__file__).with_name("csrc")
SOURCES = [
    CSRC / "fused_pack.cpp",
    CSRC / "fused_dispatch.cpp",
    CSRC / "fused_register.cpp",
    CSRC / "fused_direct.cpp",
    CSRC / "work_pool.cpp",
    CSRC / "fused_generic.cpp",
    CSRC / "fused_avx2.cpp",
    CSRC / "fused_avx512.cpp",
    CSRC / "fused_blob.h",
    CSRC / "fused_ops.h",
    CSRC / "fused_variant.h",
    CSRC / "fused_impl.h",
    CSRC / "fused_kernels.h",
    CSRC / "simd.h",
    CSRC / "cpu_isa.h",
    CSRC / "epilogue.h",
    CSRC / "work_pool.h",
]
THREAD_SLOTS = 64
BUCKETS = 11
ISAS = ("generic", "avx2", "avx512")
FAMILIES = ("rows", "perm", "tiled", "tiledkb", "nm")
#: a tiled kernel's width code -> vector accumulators per neuron (tile columns = that x VL)
WIDTHS = {0: 4, 1: 8, 2: 2}
#: the permute pack's windows (``fused_pack``'s ``windows``): 0 whichever layout has fewer
#: steps (a layer's pack until the tuner picks), 1 block-aligned windows, 2 sliding windows;
#: the suffix :func:`variant_name` gives a permute variant of each
WINDOWS = {0: "", 1: "a", 2: "s"}


def _setup(ops) -> None:
    _register_fakes()
    _register_autograd()
    _self_check(ops)


_EXT = Extension("srigl_fused_ext", SOURCES, "srigl", setup=_setup)


def load():
    """``torch.ops.srigl`` with the fused operators registered (built on first use).

    Raises:
        KernelUnavailableError: no compiler, build failure (first error line), or
            ``SRIGL_FUSED_KERNEL=numba`` in the environment (the numba kernel is asked for).
    """
    if os.environ.get("SRIGL_FUSED_KERNEL", "").lower() == "numba":
        raise KernelUnavailableError("SRIGL_FUSED_KERNEL=numba asks for the numba kernel")
    return _EXT.load()


def direct_linear():
    """The extension module's ``linear(x, blob, table, out_features)``: ``srigl::fused_linear``
    (not transposed) called without the torch dispatcher (see ``csrc/fused_direct.cpp``; only
    where :func:`backends.hot_path.direct_ok` holds)."""
    load()
    return _EXT.module.linear


def available() -> tuple[bool, str]:
    """``(True, "")`` if the C++ operators load here, else ``(False, why)``."""
    try:
        load()
    except KernelUnavailableError as err:
        return False, err.reason
    return True, ""


_failures: list[str] = []


def self_check_failures() -> list[str]:
    """Variants that disagreed with the portable kernel when the extension loaded (their ISA
    level is then switched off in this process); empty when every level passed."""
    return list(_failures)


def _self_check(o) -> None:
    """Run every variant of each SIMD level this CPU has on a small odd layer against the
    portable rows kernel; a level that disagrees is capped off with a warning, so a kernel bug
    on a CPU the tests never ran on costs speed, not correct results."""
    g = torch.Generator().manual_seed(0)
    in_f, out_f, k = 77, 37, 9
    active = torch.arange(0, out_f, 2)[:15]
    idx = torch.stack([torch.randperm(in_f, generator=g)[:k].sort().values for _ in active])
    values = torch.randn(len(active), k, generator=g)
    bias = torch.randn(out_f, generator=g)
    # an N:M layer (2:8, 80 inputs: 10 groups; k 20, so the SIMD steps leave a tail): nm runs
    nm_in, nm_idx = 80, torch.rand(len(active), 10, 8, generator=g).argsort(-1)[..., :2]
    nm_idx = (nm_idx.sort(-1).values + 8 * torch.arange(10)[:, None]).reshape(len(active), 20)
    nm_values = torch.randn(len(active), 20, generator=g)
    layers = [(values, idx, in_f), (nm_values, nm_idx, nm_in)]

    def disagreeing(level: int) -> list[str]:
        bad = []
        layer_geos = [(lay, geo) for lay in layers for geo in [(0, 0), *perm_geometries(level)]]
        for (vals, ix, n_in), geo in layer_geos:
            blob = o.fused_pack(vals, ix.to(torch.int32), active, bias, n_in, *geo)
            for batch in (1, 3, 6, 17, 70):
                x = torch.randn(batch, n_in, generator=g)
                ref = o.fused_linear_variant(x, blob, 0, out_f, False)
                for family in range(len(FAMILIES)):
                    for wide in WIDTHS:
                        code = encode(ISAS[level], FAMILIES[family], wide, False)
                        if (wide and family < 2) or not o.fused_runs_here(blob, code):
                            continue
                        y = o.fused_linear_variant(x, blob, code, out_f, False)
                        if not torch.allclose(y, ref, rtol=1e-4, atol=1e-4):
                            bad.append(variant_name(code, geo[1], geo[0]) + f" batch {batch}")
        return bad

    named = {"isas": ISAS, "kernel": "fused", "reference": "the portable kernel", "log": log}
    check_isa_levels(int(o.fused_detected_isa()), disagreeing, o.fused_cap_isa, _failures, **named)


def _register_fakes() -> None:
    """Shape functions of the operators for FakeTensor tracing (compile, export)."""
    if getattr(_register_fakes, "done", False):
        return

    @torch.library.register_fake("srigl::fused_linear")
    def _(x, blob, table, out_features, transposed):
        if transposed:
            return x.new_empty((out_features, x.shape[1]))
        return x.new_empty((*x.shape[:-1], out_features))

    @torch.library.register_fake("srigl::fused_linear_variant")
    def _(x, blob, variant, out_features, transposed):
        if transposed:
            return x.new_empty((out_features, x.shape[1]))
        return x.new_empty((*x.shape[:-1], out_features))

    @torch.library.register_fake("srigl::fused_linear_epilogue")
    def _(x, blob, table, variant, out_features, transposed, residual=None, relu=False):
        if transposed:
            return x.new_empty((out_features, x.shape[1]))
        return x.new_empty((*x.shape[:-1], out_features))

    @torch.library.register_fake("srigl::fused_linear_backward")
    def _(grad, blob, in_features, transposed):
        if transposed:
            return grad.new_empty((in_features, grad.shape[1]))
        return grad.new_empty((*grad.shape[:-1], in_features))

    _register_fakes.done = True


def _register_autograd() -> None:
    """The backward of ``srigl::fused_linear``: grad_x = the transposed condensed product of
    grad_y (float32, x's shape); the blob, table and sizes get none."""
    if getattr(_register_autograd, "done", False):
        return

    def setup_context(ctx, inputs, output) -> None:
        x, blob, _, _, transposed = inputs
        ctx.save_for_backward(blob)
        ctx.in_features = x.shape[0] if transposed else x.shape[-1]
        ctx.transposed = transposed

    def backward(ctx, grad):
        (blob,) = ctx.saved_tensors
        gx = None
        if ctx.needs_input_grad[0]:
            gx = torch.ops.srigl.fused_linear_backward(
                grad.contiguous(), blob, ctx.in_features, ctx.transposed
            )
        return gx, None, None, None, None

    torch.library.register_autograd("srigl::fused_linear", backward, setup_context=setup_context)
    _register_autograd.done = True


class Variant(NamedTuple):
    """A decoded variant code: ISA level, family, wide (0/1/2: :data:`WIDTHS`), parallel (0/1),
    as ints."""

    isa: int
    family: int
    wide: int
    parallel: int


def encode(isa: str, family: str, wide: int | bool = False, parallel: bool = True) -> int:
    """The variant code of (isa, family, wide, parallel); see the module docstring (``wide``:
    a tiled kernel's width code, 0 / False: 4 vector accumulators, 1 / True: 8, 2: 2)."""
    if int(wide) not in WIDTHS:
        raise ValueError(f"wide={wide!r} is invalid; allowed: {sorted(WIDTHS)}")
    return ISAS.index(isa) * 1000 + FAMILIES.index(family) * 100 + 10 * int(wide) + int(parallel)


def decode(code: int) -> Variant:
    """The parts of a variant code (``encode``'s inverse; no range check)."""
    code = int(code)
    return Variant(code // 1000, code // 100 % 10, code // 10 % 10, code % 10)


def is_perm(code: int) -> bool:
    """Whether variant ``code`` runs the permute pack (its pack geometry matters)."""
    return decode(code).family == FAMILIES.index("perm")


def variant_name(code: int, block: int = 0, lanes: int = 0, windows: int = 0) -> str:
    """A readable name, e.g. ``avx2/perm8x16/par`` (lanes x block), ``avx512/perm16x32a/par``
    (block-aligned windows; ``s``: sliding, none: the layout with fewer steps: :data:`WINDOWS`),
    ``avx2/tiledkb32/ser``, ``avx512/nm/par``."""
    isa, family, wide, par = decode(code)
    fam = FAMILIES[family]
    if fam == "perm":
        fam = f"perm{lanes}x{block}{WINDOWS.get(windows, '?')}"
    elif fam in ("tiled", "tiledkb"):
        vl = 16 if isa == 2 else 8
        fam = f"{fam}{WIDTHS[wide] * vl}"
    return f"{ISAS[isa]}/{fam}/{'par' if par else 'ser'}"


def perm_geometries(isa: int) -> list[tuple[int, int]]:
    """(lanes, block) permute packs the SIMD kernels of ISA level ``isa`` run, the default
    (built with the layer; the tuner may switch) first. ``block`` counts the zero slot: a block
    holds block - 1 inputs. AVX2: one-register blocks first (per core on a Zen 3 they ran 1.3x
    faster than two-register blocks, which need two permutes and a blend per step)."""
    if isa >= 2:
        return [(16, 32), (16, 16)]
    if isa == 1:
        return [(8, 8), (8, 16)]
    return []
