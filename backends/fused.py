"""``fused``: hand-written condensed kernels: a C++ operator on CPU (``srigl::fused_linear``,
variants chosen by measurement), the numba kernel where no C++ compiler exists, and the Triton
kernel on CUDA.

Besides ``forward(x)`` for x [..., in], ``forward_transposed(xt)`` takes activations laid out
as [in, batch] and returns [out, batch], so a model can keep its activations transposed between
layers and skip the transposes (CPU).

Gradients: the C++ operator has a backward with respect to x (the transposed condensed
product), so a fused layer inside a model that trains earlier layers passes their gradient on.
Where a gradient is needed and the running kernel has none (the values require grad; the numba
or Triton kernels), the layer computes through the differentiable gather form of the ``naive``
backend instead (same function, slower): never a cut graph.

CPU kernel (``backends/kernels``): the layer is packed once when it is built or loaded (and
again after ``to()``, ``deepcopy``, ``load_state_dict``) into one blob: values, int16 indices
(int32 from 32768 inputs), a permute pack for small batches and, where every active neuron's
mask is N:M (M 2, 4, 8 or 16; :attr:`FusedLinear.nm_pattern`), 4-bit in-group offsets for the
``nm`` variants. Which micro-kernel runs for a batch (gather rows, permute pack, tiled, nm;
serial or on the work pool; AVX-512, AVX2 or generic) is read
from the layer's variant table, which the autotuner (:mod:`backends.kernels.linear_tuner`)
fills on the first call of each batch bucket and thread count (or ahead of time:
:func:`backends.tune`).
``layer.variant_for(batch)`` names the variant that runs.

Non-finite inputs: a column a neuron keeps propagates inf/NaN into that neuron's output as
``F.linear`` does; a column it does not keep never reaches it (masked dense ``F.linear`` gives
NaN there, since 0 * inf = NaN; the condensed layers give the finite sum of the kept terms).
"""

from __future__ import annotations

import logging
from typing import ClassVar

import torch

from backends import BACKENDS
from backends.base import BadInputError
from backends.condensed import CondensedLinear
from backends.fused_cpu import NumbaCondensed, kernel_index_dtype, numba_available
from backends.fused_triton import triton_available, triton_linear
from backends.hot_path import call_op, direct_ok, grad_needed, kernel_residual, raw_op
from backends.kernels import linear_tuner, ops
from backends.kernels.build import KernelUnavailableError
from backends.naive import gather_linear

log = logging.getLogger(__name__)
# "linear": torch.ops.srigl.fused_linear.default (no overload lookup per call); "direct": the
# extension module's linear (the same C++ function below the dispatcher: hot_path.direct_ok)
_OPS: dict = {}


def cpp_available() -> tuple[bool, str]:
    """Whether the C++ CPU kernel loads here (building it on first call): ``(ok, why)``."""
    return ops.available()


@BACKENDS.register("fused")
class FusedLinear(CondensedLinear):
    """C++ (or, without a compiler, numba) kernel on CPU, float32; Triton kernel on CUDA
    (float32, bfloat16, float16); int16 indices when in_features < 32768."""

    devices: ClassVar[tuple[str, ...]] = ("cpu", "cuda")
    dtypes: ClassVar[tuple[torch.dtype, ...]] = (torch.float32, torch.bfloat16, torch.float16)

    @classmethod
    def available(cls, device: str | torch.device = "cpu") -> tuple[bool, str]:
        """CUDA: Triton. CPU: the C++ kernel, else numba; ``(True, why)`` names a missing C++
        kernel even when numba serves."""
        ok, why = super().available(device)
        if not ok:
            return ok, why
        if torch.device(device).type == "cuda":
            return triton_available(device)
        ok, why = cpp_available()
        if ok:
            return True, ""
        nb_ok, nb_why = numba_available()
        if nb_ok:
            return True, f"C++ kernel unavailable ({why}); the numba kernel serves"
        return False, f"C++ kernel unavailable ({why}) and {nb_why}"

    @classmethod
    def supports(cls, device: str | torch.device, dtype: torch.dtype) -> tuple[bool, str]:
        ok, why = super().supports(device, dtype)
        if ok and torch.device(device).type == "cpu" and dtype != torch.float32:
            return False, f"the CPU kernels compute float32 only, not {dtype}"
        return ok, why

    # ------------------------------------------------------------------ derived state
    @property
    def perm_geometry(self) -> tuple[int, int]:
        """(lanes, block) of the permute pack; (0, 0): none."""
        return self._geometry

    @property
    def perm_windows(self) -> int:
        """The permute pack's windows (``backends.kernels.ops.WINDOWS``: 0 the layout with fewer
        steps, 1 block-aligned, 2 sliding)."""
        return self.__dict__.get("_windows", 0)

    @property
    def nm_pattern(self) -> tuple[int, int] | None:
        """(N, M) when the C++ pack found the layer N:M (its ``nm`` variants run), else None."""
        return self._nm

    def _pack(self, geometry: tuple[int, int], windows: int | None = None) -> torch.Tensor:
        lanes, block = geometry
        windows = self.perm_windows if windows is None else windows
        return ops.load().fused_pack(
            self.values, self.indices, self.active, self.bias, self.in_features, lanes, block,
            windows,
        )  # fmt: skip

    def _after_load(self) -> None:
        super()._after_load()
        kidx = self.indices.to(kernel_index_dtype(self.in_features)).contiguous()
        self.register_buffer("kernel_indices", kidx, persistent=False)
        self._numba = None
        self._cpp = False
        self._nm: tuple[int, int] | None = None
        self._tuned: set[tuple[int, int]] = set()  # (threads, bucket) installed
        self._seen: set[tuple[int, int]] = set()  # (threads, rows) seen by forward
        self.__dict__.setdefault("_perm_locked", False)
        blob = torch.empty(0, dtype=torch.uint8, device=self.device)  # CPU float32: the pack
        table = torch.full(
            (ops.THREAD_SLOTS, ops.BUCKETS), -1, dtype=torch.int32, device=self.device
        )
        if self.device.type == "cpu" and self.dtype == torch.float32:
            try:
                o = ops.load()
                if "_geometry" not in self.__dict__:
                    geos = ops.perm_geometries(int(o.fused_isa()))
                    self._geometry = geos[0] if geos else (0, 0)
                blob = self._pack(self._geometry)
                info = list(o.fused_pack_info(blob))
                self._nm = (int(info[13]), int(info[14])) if info[14] else None
                _OPS.setdefault("linear", raw_op(o.fused_linear.default))
                _OPS.setdefault("direct", ops.direct_linear())
                self._cpp = True
            except KernelUnavailableError:
                self._numba = NumbaCondensed(
                    self.values, self.kernel_indices, self.active, self.bias, self._all_active
                )
        self.__dict__.setdefault("_geometry", (0, 0))
        self.register_buffer("kernel_blob", blob, persistent=False)
        self.register_buffer("variant_table", table, persistent=False)
        self._blob, self._table = blob, table  # the same tensors, for the eager hot path

    def __getstate__(self):
        state = super().__getstate__()
        for name in ("_blob", "_table"):
            state.pop(name, None)
        return state

    def _install(
        self, threads: int, bucket: int, code: int, geometry: tuple[int, int], windows: int = 0
    ) -> None:
        """Set the variant for (threads, bucket); a permute variant may bring its pack geometry
        and windows (adopted once per layer, at the first tuned permute batch)."""
        perm = ops.is_perm(code)
        blob, adopt = self.kernel_blob, None
        if windows not in ops.WINDOWS:
            raise ValueError(f"windows={windows!r} is invalid; allowed: {sorted(ops.WINDOWS)}")
        new_pack = geometry and (tuple(geometry), windows) != (self._geometry, self.perm_windows)
        if perm and new_pack and not self._perm_locked:
            adopt = (int(geometry[0]), int(geometry[1]))
            blob = self._pack(adopt, windows)
        if not ops.load().fused_runs_here(blob, code):  # checked before the layer changes
            raise ValueError(
                f"variant {code} ({ops.variant_name(code)}) does not run here "
                f"(pack geometry {list(adopt or self._geometry)})"
            )
        if adopt is not None:
            self._geometry, self._windows = adopt, windows
            self.kernel_blob = self._blob = blob
        if perm:
            self._perm_locked = True
        with torch.inference_mode():  # the table may be an inference tensor (built in that mode)
            self.variant_table[linear_tuner.thread_slot(threads), bucket] = code
        self._tuned.add((threads, bucket))

    def variant_for(self, batch: int, threads: int | None = None) -> str:
        """The kernel variant that runs for ``batch`` rows on ``threads`` threads (default:
        torch's), e.g. ``avx2/perm8x16/par``, ``avx512/tiled64/par``, ``numba/rows``."""
        threads = threads or torch.get_num_threads()
        if self.device.type == "cuda":
            return "triton"
        if not self._cpp:
            return "numba/" + self._numba.kernel_for(batch) if self._numba else "none"
        if linear_tuner.enabled() and (threads, linear_tuner.bucket_of(batch)) not in self._tuned:
            linear_tuner.tune_layer(self, [batch], threads, measure_missing=False)  # cached winner
        code = int(ops.load().fused_resolve(self.kernel_blob, self.variant_table, batch, threads))
        return ops.variant_name(code, self._geometry[1], self._geometry[0], self.perm_windows)

    def tune(self, batches=(1, 197, 256), threads: int | None = None, force: bool = False):
        """Tune (or read from the cache) the variants for ``batches``; {batch: variant}."""
        if not self._cpp:
            return {int(b): self.variant_for(int(b)) for b in batches}
        return linear_tuner.tune_layer(self, batches, threads, force=force)

    # ------------------------------------------------------------------ forward
    def _tune_first_use(self, threads: int, rows: int) -> None:
        """First call with ``rows`` rows on ``threads`` threads: install the bucket's variant
        (from the tuning cache, else timed now) unless it is there already."""
        if (threads, linear_tuner.bucket_of(rows)) not in self._tuned:
            linear_tuner.tune_layer(self, [max(rows, 1)], threads)
        if len(self._seen) > 4096:  # many distinct batch sizes: forget, stay small
            self._seen.clear()
        self._seen.add((threads, rows))

    def _cpu_ready(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """On the first call of a (threads, batch bucket), install its variant; x as it is."""
        if linear_tuner.enabled():
            threads = torch.get_num_threads()
            if (threads, rows) not in self._seen:
                self._tune_first_use(threads, rows)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``F.linear(x, weight * mask, bias)`` for x [..., in] -> [..., out], x.dtype;
        differentiable with respect to x (and to the values where they require grad)."""
        # float32 CPU on the C++ operator unless the values need a gradient (it differentiates
        # x only): the lean eager path (backends.hot_path); the values are looked up in grad
        # mode only
        try:
            cpp = self._cpp and x.dtype == torch.float32 and x.is_cpu
        except AttributeError:  # not a tensor: check_input names it (a try costs nothing)
            self.check_input(x)
            raise
        if cpp and not (torch.is_grad_enabled() and self.values.requires_grad):
            if x.dim() == 0 or x.shape[-1] != self.in_features:
                self.check_input(x)
            if torch.compiler.is_compiling():  # buffers: what compile and export trace
                return torch.ops.srigl.fused_linear(
                    x, self.kernel_blob, self.variant_table, self.out_features, False
                )
            rows = x.shape[0] if x.dim() == 2 else x.numel() // self.in_features
            x = self._cpu_ready(x, rows)
            if direct_ok(x):  # the same C++ function, without the dispatcher (~2 us a call)
                return _OPS["direct"](x, self._blob, self._table, self.out_features)
            return call_op(_OPS["linear"], x, self._blob, self._table, self.out_features, False)
        if x.dim() == 2 and self._numba is not None and not grad_needed(x, self.values):
            if x.shape[1] != self.in_features or x.dtype != torch.float32 or not x.is_cpu:
                self.check_input(x)
            return self._numba.linear(x)
        return super().forward(x)

    def _forward_2d(self, x: torch.Tensor) -> torch.Tensor:
        if grad_needed(x, self.values):  # the differentiable gather form
            return self.scatter_active(gather_linear(x, self.values, self.indices64))
        if x.is_cuda:
            return triton_linear(
                x, self.values, self.kernel_indices, self.active, self.bias, self._all_active
            )
        # (float32 CPU inputs of the C++ kernel never get here: forward takes them all)
        return self._cpu_kernel().linear(x)

    def _cpu_kernel(self) -> NumbaCondensed:
        if self._numba is None:
            raise BadInputError(
                f"layer {self.layer_name!r}: the CPU kernels compute float32 only, "
                f"this layer holds {self.dtype}"
            )
        return self._numba

    def forward_transposed(
        self,
        xt: torch.Tensor,
        residual: torch.Tensor | None = None,
        relu: bool = False,
    ) -> torch.Tensor:
        """The same layer on transposed activations: xt [in, B] -> yT [out, B] (float32 on CPU),
        then ``relu(yT + residual)`` where asked (residual: yT's shape; a 1x1 conv's ReLU and
        skip add: the C++ kernels apply it as they write yT).

        ``layer.forward_transposed(x.T.contiguous()).T == layer(x)``; chaining layers this way
        avoids transposing between them.
        """
        if residual is not None or relu:
            return self._transposed_epilogue(xt, residual, relu)
        if xt.dim() != 2 or xt.shape[0] != self.in_features:
            raise BadInputError(
                f"layer {self.layer_name!r}: expected transposed input [{self.in_features}, B], "
                f"got shape {list(xt.shape)}"
            )
        self.check_input(xt.t())
        no_backward = not self._cpp or xt.is_cuda or self.values.requires_grad
        if no_backward and grad_needed(xt, self.values):
            return self._forward_2d(xt.t()).t()  # the differentiable gather form
        if xt.is_cuda:
            return triton_linear(
                xt.t(),
                self.values,
                self.kernel_indices,
                self.active,
                self.bias,
                self._all_active,
            ).t()
        if self._cpp:
            xt = self._cpu_ready(xt, xt.shape[1])
            if direct_ok(xt) and not torch.compiler.is_compiling():  # as in forward
                return _OPS["direct"](xt, self._blob, self._table, self.out_features, True)
            return torch.ops.srigl.fused_linear(
                xt, self.kernel_blob, self.variant_table, self.out_features, True
            )
        return self._cpu_kernel().linear_transposed(xt)

    def _transposed_epilogue(
        self, xt: torch.Tensor, residual: torch.Tensor | None, relu: bool
    ) -> torch.Tensor:
        """:meth:`forward_transposed` with ``relu(yT + residual)``: in the C++ kernel where the
        residual is a float32 CPU tensor of yT's shape and no gradient is needed, else after."""
        in_kernel = (
            self._cpp
            and xt.is_cpu
            and xt.dim() == 2
            and xt.shape[0] == self.in_features
            and not grad_needed(xt, self.values)
            and (residual is None or kernel_residual(residual, (self.out_features, xt.shape[1])))
        )
        if in_kernel:
            self.check_input(xt.t())
            xt = self._cpu_ready(xt, xt.shape[1])
            return torch.ops.srigl.fused_linear_epilogue(
                xt,
                self.kernel_blob,
                self.variant_table,
                -1,
                self.out_features,
                True,
                residual,
                relu,
            )
        y = self.forward_transposed(xt)
        if residual is not None:
            y = y + residual
        return torch.relu(y) if relu else y
