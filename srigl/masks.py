"""Which parameters are sparse, and the random initial masks.

A sparse-eligible parameter is the ``weight`` of every Linear and Conv layer and the fused
q/k/v projection of ``nn.MultiheadAttention`` (``in_proj_weight``, or ``q/k/v_proj_weight``).

Attention blocks (what ``sparse_attention=False`` keeps dense) are recognised by module type:
``nn.MultiheadAttention``, and every class of the timm and Hugging Face ``transformers``
packages whose name ends in ``Attention`` (timm's ViT/DeiT/BEiT ``Attention``, Swin's
``WindowAttention``, EVA's ``EvaAttention``...; transformers' ``BertAttention``,
``ViTSelfAttention``, ``LlamaAttention``, ``CLIPAttention``...), whose q/k/v and output
projections are plain ``nn.Linear`` layers. Any other model names its attention modules with
the ``attention_layers`` globs. (GPT-2 style ``Conv1D`` projections are not Linear layers and
are not sparse-eligible at all.)

Names are full dotted parameter names with wrappers removed (no ``module.`` from DDP, no
``_orig_mod.`` from torch.compile). Row i of a weight is neuron i; its fan-in is the product of
the other dims (``in_features``, or ``in_channels / groups * kh * kw`` for a conv).
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from srigl.errors import SparsityConfigError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_WRAPPER_SEGMENTS = ("_orig_mod",)


@dataclass
class SparseParam:
    """One sparse-eligible weight.

    Attributes:
        name: unwrapped full parameter name, e.g. "layers.0.weight".
        param: the parameter itself (dense storage; masked positions hold zeros).
        module_name: unwrapped name of the owning module.
        in_attention: whether it belongs to an attention block (see the module docstring).
    """

    name: str
    param: nn.Parameter
    module_name: str
    in_attention: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        """The weight's shape, e.g. (out, in) or (out, in/groups, kh, kw)."""
        return tuple(self.param.shape)

    @property
    def out_features(self) -> int:
        """Number of neurons (rows): shape[0]."""
        return int(self.param.shape[0])

    @property
    def fan_in(self) -> int:
        """Dense fan-in of one neuron: the product of every dim but the first."""
        return math.prod(self.shape[1:])

    @property
    def numel(self) -> int:
        """Total number of weights."""
        return self.param.numel()


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip DDP / DataParallel (``.module``) and torch.compile (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def wrapper_prefixes(model: nn.Module) -> list[str]:
    """The name prefixes the wrappers around ``model`` add, outermost first: ``"module."``
    per DDP / DataParallel, ``"_orig_mod."`` per torch.compile; ``[]`` for a bare model."""
    prefixes: list[str] = []
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            prefixes.append("module.")
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            prefixes.append("_orig_mod.")
            model = model._orig_mod
        else:
            return prefixes


def clean_name(name: str) -> str:
    """Remove wrapper segments (``_orig_mod``) from a dotted name inside an unwrapped model."""
    return ".".join(part for part in name.split(".") if part not in _WRAPPER_SEGMENTS)


def matches_any(name: str, patterns: Iterable[str]) -> bool:
    """Whether ``name`` matches one of the fnmatch globs ``patterns`` (case-sensitive)."""
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_globs(option: str, patterns: Iterable[str], names: Iterable[str]) -> None:
    """Raise a ValueError for the first glob of ``patterns`` that matches none of ``names``.

    A typo in a layer option (``dense_layers=["layer.0*"]``) would otherwise silently leave
    the layer sparse; the message names the option, the pattern and the closest names.

    Args:
        option: the option's name, e.g. "dense_layers". patterns: its fnmatch globs.
        names: what the globs may match (parameter and module names).
    """
    known = sorted(set(names))
    for pattern in patterns:
        if any(fnmatch.fnmatchcase(n, pattern) for n in known):
            continue
        close = difflib.get_close_matches(pattern, known, n=5, cutoff=0.5)
        hint = f"closest: {close}" if close else f"eligible: {known[:20]}"
        more = f" (+{len(known) - 20} more)" if not close and len(known) > 20 else ""
        raise SparsityConfigError(
            f"{option} pattern {pattern!r} matches no sparse-eligible parameter or module; "
            f"{hint}{more}"
        )


def is_attention_module(module: nn.Module) -> bool:
    """Whether ``module`` is an attention block by type (see the module docstring):
    ``nn.MultiheadAttention``, or a timm / transformers class whose name ends in Attention."""
    if isinstance(module, nn.MultiheadAttention):
        return True
    cls = type(module)
    package = cls.__module__.split(".", 1)[0]
    return package in _ATTENTION_PACKAGES and cls.__name__.endswith("Attention")


_ATTENTION_PACKAGES = ("timm", "transformers")


def eligible_parameters(
    model: nn.Module, attention_layers: Sequence[str] = ()
) -> list[SparseParam]:
    """Every sparse-eligible weight of ``model``, in ``named_modules()`` order.

    Weights inside attention blocks (by module type, see :func:`is_attention_module`, or
    modules matching an ``attention_layers`` glob) are returned with ``in_attention=True``;
    ``sparse_attention=False`` makes them forced-dense (:func:`forced_dense_names`).

    Args:
        model: any module, possibly wrapped by DDP or torch.compile.
        attention_layers: fnmatch globs of module (or parameter) names to treat as attention
            blocks, for attention modules the type check does not know; each must match.
    """
    root = unwrap_model(model)
    globs = list(attention_layers)
    if globs:
        names = [clean_name(n) for n, _ in root.named_modules() if n]
        names += [clean_name(n) for n, _ in root.named_parameters()]
        check_globs("attention_layers", globs, names)
    found: list[SparseParam] = []
    seen: set[int] = set()
    attention_prefixes: list[str] = []
    for mod_name, module in root.named_modules():
        clean = clean_name(mod_name)
        # p == "": the model itself is the attention block, so every submodule is inside it
        inside = any(p == "" or clean == p or clean.startswith(p + ".") for p in attention_prefixes)
        if not inside and (is_attention_module(module) or (clean and matches_any(clean, globs))):
            attention_prefixes.append(clean)
            inside = True
        candidates: list[tuple[str, nn.Parameter | None]] = []
        if isinstance(module, nn.MultiheadAttention):
            candidates = [
                (attr, getattr(module, attr, None))
                for attr in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
            ]
        elif isinstance(module, (nn.Linear, *_CONV)):
            candidates = [("weight", module.weight)]
        for attr, param in candidates:
            if not isinstance(param, nn.Parameter) or id(param) in seen:
                continue
            seen.add(id(param))
            full = f"{clean}.{attr}" if clean else attr
            found.append(SparseParam(full, param, clean, inside or matches_any(full, globs)))
    return found


def forced_dense_names(
    params: list[SparseParam],
    dense_layers: Iterable[str] = (),
    dense_first_layer: bool = False,
    dense_classifier: bool = False,
    sparse_attention: bool = True,
) -> set[str]:
    """Names of eligible weights kept dense by configuration.

    ``dense_layers`` are fnmatch globs over parameter names (a module name matches too); each
    must match something (:func:`check_globs`). The first layer and the classifier are the
    first and last eligible weights. ``sparse_attention=False`` adds every weight inside an
    attention block; like every forced-dense layer it stays inside N and spends its full size
    from the budget d*N (SPEC.md section 1).
    """
    globs = list(dense_layers)
    check_globs("dense_layers", globs, [p.name for p in params] + [p.module_name for p in params])
    dense = {
        p.name for p in params if matches_any(p.name, globs) or matches_any(p.module_name, globs)
    }
    if not sparse_attention:
        dense |= {p.name for p in params if p.in_attention}
    if params and dense_first_layer:
        dense.add(params[0].name)
    if params and dense_classifier:
        dense.add(params[-1].name)
    return dense


def random_unstructured_mask(
    shape: tuple[int, ...], nnz: int, generator: torch.Generator
) -> torch.Tensor:
    """A bool mask of ``shape`` with exactly ``nnz`` True positions chosen uniformly at random.

    Drawn on the CPU from ``generator`` so that every rank and device gets the same mask.
    """
    numel = math.prod(shape)
    flat = torch.zeros(numel, dtype=torch.bool)
    flat[torch.randperm(numel, generator=generator)[:nnz]] = True
    return flat.view(shape)


def random_fan_in_mask(
    shape: tuple[int, ...], k: int, generator: torch.Generator, active: torch.Tensor | None = None
) -> torch.Tensor:
    """A bool mask of ``shape`` whose active rows have exactly ``k`` True positions each.

    Args:
        shape: (out, ...) weight shape; row i is flattened to shape[1:] numel positions.
        k: non-zeros per active row, 0 <= k <= fan-in.
        generator: CPU generator; the mask is drawn on the CPU.
        active: bool [out]; rows that are False get no positions (default: all active).
    """
    out = shape[0]
    fan_in = math.prod(shape[1:])
    scores = torch.rand(out, fan_in, generator=generator)
    chosen = scores.topk(k, dim=1).indices
    mask = torch.zeros(out, fan_in, dtype=torch.bool)
    mask.scatter_(1, chosen, True)
    if active is not None:
        mask &= active.to(torch.bool).view(out, 1).cpu()
    return mask.view(shape)


class SparsityTooHighError(ValueError):
    """A layer's budget leaves its neurons less than one input each (k = 0)."""


def layer_budget(numel: int, density: float) -> int:
    """B = floor(numel * density): the non-zeros one layer may hold at ``density`` on its own
    (benchmark masks, :func:`constant_fan_in_mask`). Trainers do not use it: their budgets are
    the shared constant fan-in allocation of :mod:`srigl.budgets` (B_l = k_l * out_l).

    The product is rounded to 6 decimals first, which absorbs float error (2000 * (1 - 0.9) is
    199.99999999999997; B is 200).
    """
    return math.floor(round(numel * float(density), 6))


def constant_fan_in_k(budget: int, n_active: int, fan_in: int) -> int:
    """k = floor(B / n_active), capped at the fan-in: the one formula of the constant fan-in."""
    if n_active <= 0:
        return 0
    return min(int(fan_in), int(budget) // int(n_active))


def constant_fan_in_mask(
    shape: tuple[int, ...] | torch.Size,
    sparsity: float,
    generator: torch.Generator,
    ablate: float = 0.0,
    name: str = "",
) -> torch.Tensor:
    """A constant fan-in bool mask of ``shape`` at ``sparsity``, as SRigL's initial masks.

    The budget is B = floor(numel * (1 - sparsity)); a fraction ``ablate`` of the neurons (random
    ones) is switched off and each of the n_active others keeps k = floor(B / n_active) of its
    fan-in positions, chosen uniformly at random on the CPU from ``generator``.

    Args:
        shape: (out, in) of a Linear weight or (out, in/groups, kh, kw) of a Conv2d weight.
        sparsity: in [0, 1).
        generator: CPU ``torch.Generator`` (seeded by the caller).
        ablate: fraction of ablated neurons, in [0, 1).
        name: the layer, named in errors.

    Returns:
        bool tensor of ``shape`` (on the CPU).

    Raises:
        ValueError: ``sparsity`` or ``ablate`` outside [0, 1), or a shape of fewer than 2 dims.
        SparsityTooHighError: k would be 0 (names the layer and the largest usable sparsity).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2:
        raise ValueError(f"layer {name!r}: shape {list(shape)} must have >= 2 dims (out, ...)")
    for what, value in (("sparsity", sparsity), ("ablate", ablate)):
        if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
            raise ValueError(f"layer {name!r}: {what}={value!r} must be a number in [0, 1)")
    out, fan_in = shape[0], math.prod(shape[1:])
    budget = layer_budget(out * fan_in, 1.0 - float(sparsity))
    n_off = math.floor(out * float(ablate))
    n_active = out - n_off
    k = constant_fan_in_k(budget, n_active, fan_in)
    if k < 1:
        raise SparsityTooHighError(
            f"layer {name!r} (shape {list(shape)}): sparsity {sparsity} leaves k = 0 inputs per "
            f"neuron; use a sparsity below {1 - n_active / (out * fan_in):.6f}"
        )
    active = torch.ones(out, dtype=torch.bool)
    if n_off:
        active[torch.randperm(out, generator=generator)[:n_off]] = False
    return random_fan_in_mask(shape, k, generator, active)


def random_n_m_mask(
    shape: tuple[int, ...], n: int, m: int, generator: torch.Generator
) -> torch.Tensor:
    """A bool N:M mask of ``shape``: each group of ``m`` consecutive positions of a row's
    flattened fan-in holds exactly ``n`` True, chosen uniformly at random.

    Args:
        shape: (out, ...) weight shape; row i is flattened (for a Conv2d in (c, dy, dx)
            order) and cut into consecutive groups of m, so the fan-in must be a multiple of m.
        n, m: 0 <= n <= m.
        generator: CPU generator; the mask is drawn on the CPU.

    Raises:
        ValueError: a fan-in that is not a multiple of m.
    """
    out, fan_in = shape[0], math.prod(shape[1:])
    if fan_in % m:
        raise ValueError(f"fan-in {fan_in} of shape {list(shape)} is not a multiple of M = {m}")
    scores = torch.rand(out * fan_in // m, m, generator=generator)
    mask = torch.zeros(out * fan_in // m, m, dtype=torch.bool)
    mask.scatter_(1, scores.topk(n, dim=1).indices, True)
    return mask.view(shape)
