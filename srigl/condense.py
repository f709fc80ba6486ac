"""Trained masked model -> condensed model for inference.

::

    small = srigl.condense(model, trainer.masks, backend="fused")          # same function
    small = srigl.condense(model, trainer.masks, "fused", structured=True)  # also drops neurons
    torch.save(small.state_dict(), "small.pt")
    again = srigl.load_condensed(skeleton, trainer.masks, "small.pt", backend="fused",
                                 structured=True)

What is condensed: every ``nn.Linear`` that has a mask and whose ``forward`` is called is
replaced by ``backends.create(backend, weight, mask, bias, layer_name=<module name>)``.
What is left alone (but masked, so the copy computes the masked model's function):

- Linear layers without a mask (dense layers);
- the ``out_proj`` Linear inside ``nn.MultiheadAttention`` (attention reads its weight directly,
  never calls its forward), and attention's ``in_proj_weight``;
- convolutions (not condensed yet: they stay masked-dense).

``structured=True`` also removes ablated neurons (all-zero mask rows) of a Linear layer whose
output provably goes through elementwise modules only into the next Linear layer: an
``nn.Sequential`` ``Linear -> act/Dropout/Identity... -> Linear`` (torchvision's ``MLP`` and
``MLPBlock`` are such) and timm's ``Mlp`` block with an identity norm. An ablated neuron j then
outputs the constant ``act(b_j)``, so it and the next layer's input column j are removed and
``W_next[:, j] * act(b_j)`` is added to the next bias. Rows of the next layer that had mask
entries in a removed column get as many zero-valued mask entries at their first free columns,
so their fan-in stays constant (numerically a no-op). Anywhere else ablated neurons are kept
(a condensed backend outputs their bias). The fold treats Dropout as the identity: condensed
models are for inference (``eval()``).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from backends.registry import Registry

__all__ = [
    "ELEMENTWISE_MODULES",
    "PAIR_PATTERNS",
    "MaskMismatchError",
    "condense",
    "condensable_linears",
    "load_condensed",
    "register_elementwise",
    "unwrap_name",
]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Modules that act on every feature separately (eval mode), so neuron j's output depends on
# neuron j's input alone. Extend with :func:`register_elementwise`.
ELEMENTWISE_MODULES: set[type[nn.Module]] = {
    nn.Identity,
    nn.Dropout,
    nn.AlphaDropout,
    nn.ReLU,
    nn.ReLU6,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Tanh,
    nn.Sigmoid,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.LeakyReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
}

# Name -> function(module) yielding (first_child, [elementwise modules], second_child) pairs
# of child names of ``module`` where first's output flows only elementwise into second.
PAIR_PATTERNS: Registry = Registry("elementwise pair pattern")

# Modules that read a child Linear's weight directly instead of calling its forward.
_READS_LINEAR_WEIGHTS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


class MaskMismatchError(ValueError):
    """A mask names no parameter of the model, or its shape differs from the parameter's."""


def register_elementwise(cls: type[nn.Module]) -> type[nn.Module]:
    """Declare module class ``cls`` elementwise (usable as a decorator); see ``structured``."""
    ELEMENTWISE_MODULES.add(cls)
    return cls


def unwrap_name(name: str) -> str:
    """``name`` without leading ``module.`` (DDP) / ``_orig_mod.`` (torch.compile) prefixes."""
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


def _unwrap_model(model: nn.Module) -> nn.Module:
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _is_elementwise(module: nn.Module) -> bool:
    return type(module) in ELEMENTWISE_MODULES


@PAIR_PATTERNS.register("sequential")
def _sequential_pairs(module: nn.Module) -> Iterator[tuple[str, list[nn.Module], str]]:
    """``nn.Sequential`` (and subclasses keeping its forward): Linear, elementwise*, Linear."""
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return
    # every slot in forward order, repeats included (``named_children`` would hide a module
    # that sits in two slots, and with it a Linear between the pair)
    children = [(n, m) for n, m in module._modules.items() if m is not None]
    for i, (first, mod) in enumerate(children):
        if type(mod) is not nn.Linear:
            continue
        between: list[nn.Module] = []
        for second, nxt in children[i + 1 :]:
            if type(nxt) is nn.Linear:
                yield first, between, second
                break
            if not _is_elementwise(nxt):
                break
            between.append(nxt)


@PAIR_PATTERNS.register("timm_mlp")
def _timm_mlp_pairs(module: nn.Module) -> Iterator[tuple[str, list[nn.Module], str]]:
    """timm's ``Mlp``: fc1 -> act -> drop1 -> norm -> fc2, elementwise when norm is Identity."""
    cls = type(module)
    if cls.__name__ != "Mlp" or not cls.__module__.startswith("timm."):
        return
    parts = [getattr(module, a, None) for a in ("fc1", "act", "drop1", "norm", "fc2")]
    if any(p is None for p in parts):
        return
    fc1, act, drop1, norm, fc2 = parts
    if type(fc1) is nn.Linear and type(fc2) is nn.Linear:
        between = [act, drop1, norm]
        if all(_is_elementwise(m) for m in between):
            yield "fc1", between, "fc2"


def _skipped_linears(model: nn.Module) -> set[str]:
    """Names of Linear modules whose forward is never called (inside attention modules)."""
    skipped = set()
    for name, mod in model.named_modules():
        if isinstance(mod, _READS_LINEAR_WEIGHTS):
            for sub, child in mod.named_modules(prefix=name):
                if isinstance(child, nn.Linear):
                    skipped.add(sub)
    return skipped


def condensable_linears(model: nn.Module, masks: Mapping[str, Any]) -> list[str]:
    """Module names of the Linear layers :func:`condense` replaces (masked, forward called).

    ``masks`` maps parameter names (prefixes ``module.``/``_orig_mod.`` allowed) to masks.
    """
    model = _unwrap_model(model)
    keys = {unwrap_name(k) for k in masks}
    skipped = _skipped_linears(model)
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and f"{name}.weight" in keys and name not in skipped
    ]


def _normalise_masks(model: nn.Module, masks: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Masks keyed by the unwrapped model's parameter names, as bool tensors; checked.

    Every name of a shared (tied) parameter counts: the trainer names a tied weight after the
    Linear layer that owns it, which ``named_parameters()`` would hide behind its first owner.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    for key, mask in masks.items():
        name = unwrap_name(str(key))
        if name not in params:
            from backends.base import Backend

            if isinstance(_owner_module(model, name), Backend):
                raise MaskMismatchError(
                    f"mask {key!r}: layer {name.rpartition('.')[0]!r} is already condensed; "
                    "allowed: condense the trained masked model, not a condensed copy"
                )
            known = ", ".join(n for n, p in params.items() if p.dim() > 1) or "(none)"
            raise MaskMismatchError(
                f"mask {key!r} names no parameter of the model; weight parameters: {known}"
            )
        mask = torch.as_tensor(mask)
        if tuple(mask.shape) != tuple(params[name].shape):
            raise MaskMismatchError(
                f"mask {key!r} has shape {tuple(mask.shape)}, parameter {name!r} has "
                f"{tuple(params[name].shape)}"
            )
        out[name] = mask.to(device=params[name].device).bool()
    return out


def _owner_module(model: nn.Module, param_name: str) -> nn.Module | None:
    """The module that would own parameter ``param_name`` (None if there is no such module)."""
    try:
        return model.get_submodule(param_name.rpartition(".")[0])
    except AttributeError:
        return None


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@torch.no_grad()
def _constant_outputs(between: list[nn.Module], values: torch.Tensor) -> torch.Tensor:
    """The elementwise chain applied to ``values`` [n] in eval mode (Dropout = identity)."""
    x = values.unsqueeze(0)
    for mod in between:
        was_training = mod.training
        mod.eval()
        try:
            x = mod(x)
        finally:
            mod.train(was_training)
    return x.squeeze(0)


@torch.no_grad()
def _drop_ablated_neurons(
    model: nn.Module,
    masks: dict[str, torch.Tensor],
    first: str,
    between: list[nn.Module],
    second: str,
) -> bool:
    """Remove the ablated neurons of Linear ``first`` and the matching inputs of ``second``.

    Folds ``W_second[:, j] * between(b_first[j])`` into ``second``'s bias and updates ``masks``
    in place. Returns False (and changes nothing) where that is impossible.
    """
    lin1, lin2 = model.get_submodule(first), model.get_submodule(second)
    m1 = masks.get(f"{first}.weight")
    if m1 is None or type(lin1) is not nn.Linear or type(lin2) is not nn.Linear:
        return False
    ablated = ~m1.any(dim=1)
    n_ablated = int(ablated.sum())
    if n_ablated == 0 or n_ablated == m1.shape[0]:
        return False
    keep = ~ablated

    m2 = masks.get(f"{second}.weight")
    new_m2 = None
    if m2 is not None:
        kept = m2[:, keep]
        lost = m2.sum(dim=1) - kept.sum(dim=1)
        free = ~kept
        if bool((free.sum(dim=1) < lost).any()):
            return False  # a row cannot keep its fan-in in the narrower layer: keep the neurons
        rank = free.cumsum(dim=1)
        new_m2 = kept | (free & (rank <= lost.unsqueeze(1)))

    b1 = lin1.bias[ablated] if lin1.bias is not None else lin1.weight.new_zeros(n_ablated)
    const = _constant_outputs(between, b1.clone())
    w2 = lin2.weight * m2 if m2 is not None else lin2.weight
    fold = (w2[:, ablated].double() @ const.double()).to(lin2.weight.dtype)
    # a new Parameter, never an in-place add: the bias may be shared with another module
    lin2.bias = nn.Parameter(fold if lin2.bias is None else lin2.bias + fold)

    lin1.weight = nn.Parameter(lin1.weight[keep].clone())
    if lin1.bias is not None:
        lin1.bias = nn.Parameter(lin1.bias[keep].clone())
    lin1.out_features = int(keep.sum())
    masks[f"{first}.weight"] = m1[keep].clone()

    lin2.weight = nn.Parameter(lin2.weight[:, keep].clone())
    lin2.in_features = lin1.out_features
    if new_m2 is not None:
        masks[f"{second}.weight"] = new_m2
    return True


def _structured_pairs(model: nn.Module) -> list[tuple[str, list[nn.Module], str]]:
    """Every (first, elementwise modules, second) Linear pair found by :data:`PAIR_PATTERNS`.

    A Linear registered at more than one place in the model (reused in forward) is left out:
    narrowing it would change its other uses.
    """
    uses: dict[int, int] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        uses[id(mod)] = uses.get(id(mod), 0) + 1
    pairs = []
    for name, mod in model.named_modules():
        prefix = f"{name}." if name else ""
        for pattern in PAIR_PATTERNS.names():
            for first, between, second in PAIR_PATTERNS.get(pattern)(mod):
                if (
                    uses[id(mod.get_submodule(first))] > 1
                    or uses[id(mod.get_submodule(second))] > 1
                ):
                    continue
                pairs.append((prefix + first, between, prefix + second))
    return pairs


def condense(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    backend: str = "fused",
    structured: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose masked Linear layers are condensed backend modules.

    Args:
        model: the trained model (DDP / torch.compile wrappers are unwrapped; not modified).
        masks: {parameter name: bool (or 0/1) tensor of the parameter's shape}, e.g.
            ``trainer.masks``; names may carry ``module.`` / ``_orig_mod.`` prefixes.
        backend: a name from ``backends.names()``.
        structured: also remove ablated neurons where the next op is elementwise (see module
            docstring), which shrinks the layers.

    Returns:
        A new module computing the same function as ``model`` with every masked parameter
        multiplied by its mask (outputs allclose in the weights' dtype). Condensed layers are
        ``backends.create(backend, weight [out, in], mask [out, in], bias [out], layer_name)``.

    Raises:
        UnknownNameError: ``backend`` is not registered (lists the known names).
        BackendUnavailableError: ``backend`` cannot run on the model's device.
        MaskMismatchError: a mask names no parameter or has the wrong shape.
        ValueError: from the backend, e.g. a mask without constant fan-in (names the layer).
    """
    import backends

    backends.get(backend)  # fail fast on an unknown name, before copying the model
    base = _unwrap_model(model)
    norm_masks = _normalise_masks(base, masks)
    small = copy.deepcopy(base)
    params = dict(small.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, mask in norm_masks.items():
            params[name].mul_(mask.to(params[name].dtype))

    if structured:
        for first, between, second in _structured_pairs(small):
            _drop_ablated_neurons(small, norm_masks, first, between, second)

    # a Linear registered in several slots (reused in forward) is replaced in all of them
    slots: dict[int, list[str]] = {}
    for name, mod in small.named_modules(remove_duplicate=False):
        slots.setdefault(id(mod), []).append(name)
    for name in condensable_linears(small, norm_masks):
        lin = small.get_submodule(name)
        bias = lin.bias.detach() if lin.bias is not None else None
        new = backends.create(
            backend, lin.weight.detach(), norm_masks[f"{name}.weight"], bias, layer_name=name
        )
        new.train(lin.training)
        for slot in slots[id(lin)]:
            _set_child(small, slot, new)
    return small


def load_condensed(
    skeleton: nn.Module,
    masks: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike,
    backend: str = "fused",
    structured: bool = False,
    map_location: str | torch.device | None = None,
) -> nn.Module:
    """Rebuild a condensed model saved with ``torch.save(small.state_dict(), path)``.

    The structure of a condensed model depends only on the architecture and the masks, so
    condensing a freshly built model of the same architecture (``skeleton``, any weights) with
    the same ``masks``, ``backend`` and ``structured`` and then loading the saved state dict
    gives the saved model back.

    Args:
        skeleton: a model of the original architecture (not modified).
        masks: the masks the saved model was condensed with.
        state_dict: the saved state dict, or a path to it (read with ``weights_only=True``).
        backend, structured: as given to :func:`condense`.
        map_location: passed to ``torch.load`` for a path.

    Returns:
        The condensed model with the saved weights.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        path = os.fspath(state_dict)
        try:
            state_dict = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for foreign / truncated files
            raise ValueError(f"{path}: not a readable condensed state dict ({exc})") from exc
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"{path}: holds a {type(state_dict).__name__}, not a state dict")
    small = condense(skeleton, masks, backend=backend, structured=structured)
    small.load_state_dict(state_dict)
    return small
