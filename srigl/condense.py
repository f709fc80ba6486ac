"""Trained masked model -> condensed model for inference.

::

    small = srigl.condense(model, trainer.masks, backend="fused")          # same function
    small = srigl.condense(model, trainer.masks, "fused", structured=True)  # also drops neurons
    torch.save(small.state_dict(), "small.pt")
    again = srigl.load_condensed(skeleton, trainer.masks, "small.pt", backend="fused",
                                 structured=True)

What is condensed (in a copy; the original is untouched):

- every ``nn.Linear`` that has a mask and whose ``forward`` is called becomes
  ``backends.create(backend, weight, mask, bias, layer_name=<module name>)``;
- every ``nn.Conv2d`` with a mask becomes the backend's Conv2d module (``backends.create`` with
  the 4-D weight and the conv's stride, padding, dilation, groups; grouped and depthwise too);
- every ``nn.MultiheadAttention`` with a masked ``in_proj_weight`` or ``out_proj.weight`` becomes
  a :class:`~srigl.condensed_attention.CondensedMultiheadAttention` with condensed in- and
  out-projections (attention reads those weights directly, so the whole module is replaced);
- with ``fold_bn=True`` and the model in eval mode, every ``BatchNorm2d`` whose input is exactly
  one convolution's output (from the ``torch.fx`` graph, or ``nn.Sequential`` order where the
  model does not trace) is folded into it, exactly: ``w' = w * gamma / sqrt(var + eps)`` per
  output channel, ``b' = (b - mean) * gamma / sqrt(var + eps) + beta``; the BN becomes
  ``nn.Identity``. The mask does not change.
- every plain ``nn.MaxPool2d`` becomes a :class:`~srigl.pooling.ChannelsLastMaxPool2d` (the same
  values, pooled in the channels-last layout: torch's NCHW CPU kernel took 2.4 ms of
  ResNet-50's ~35 ms at batch 1); listed in ``small.condense_report.pools``. The whole-model
  bench applies the same rewrite to its BN-folded dense baseline, so that its ratio to that
  baseline is the sparse layers' alone.

Kept masked-dense, listed in ``small.condense_report.kept`` with the reason (and logged): layers
whose mask is not constant fan-in (for a condensed backend), convolutions with a padding mode
other than zeros, an asymmetric ``padding="same"`` or their own forward (timm's ``Conv2dSame``),
attention with ``add_bias_kv``/``add_zero_attn``. ``strict=True`` raises instead. Layers without
a mask stay as they are.

``structured=True`` also removes ablated neurons / output channels where that is exact:

- Linear: an ablated neuron whose output provably goes through elementwise modules only into
  the next Linear layer (``nn.Sequential`` ``Linear -> act/Dropout/Identity... -> Linear``;
  torchvision's ``MLP``/``MLPBlock``, timm's ``Mlp`` with an identity norm) outputs the constant
  ``act(b_j)``: it and the next layer's input column j are removed and ``W_next[:, j] * act(b_j)``
  is added to the next bias.
- Conv2d (groups 1; needs the fx graph): an ablated output channel whose output goes through
  (folded BN and) elementwise ops only into the next condensed conv (groups 1) outputs the
  constant ``c_j = act(b'_j)``. It is removed when the next conv is 1x1 without padding
  (``W_next[:, j] * c_j`` goes into its bias) or when ``c_j == 0`` exactly (ReLU of a
  non-positive bias); a k x k conv with zero padding sees a non-zero constant differently at the
  borders, so such channels stay (the backend outputs their bias).

Rows of the next layer that had mask entries in a removed column get as many zero-valued mask
entries at their first free columns, so their fan-in stays constant (numerically a no-op). The
folds treat Dropout as the identity: condensed models are for inference (``eval()``).
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

from backends.registry import Registry
from srigl._surgery import add_to_bias, keep_units, refill, run_in_eval, set_child
from srigl.condense_conv import (
    conv_args,
    conv_bn_pairs,
    conv_channel_pairs,
    conv_unsupported,
    drop_ablated_channels,
    fold_bn_into_conv,
    trace_graph,
)
from srigl.condense_report import CondenseReport
from srigl.elementwise import ELEMENTWISE_MODULES, is_elementwise, register_elementwise
from srigl.epilogues import fuse_epilogues as fuse_conv_epilogues
from srigl.masks import unwrap_model, wrapper_prefixes
from srigl.pooling import channels_last_pooling

log = logging.getLogger(__name__)

__all__ = [
    "ELEMENTWISE_MODULES",
    "CondenseReport",
    "PAIR_PATTERNS",
    "MaskMismatchError",
    "condense",
    "condensable_linears",
    "load_condensed",
    "register_elementwise",
    "unwrap_name",
]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")

# Name -> function(module) yielding (first_child, [elementwise modules], second_child) pairs
# of child names of ``module`` where first's output flows only elementwise into second.
PAIR_PATTERNS: Registry = Registry("elementwise pair pattern")

# Modules that read a child Linear's weight directly instead of calling its forward.
_READS_LINEAR_WEIGHTS: tuple[type[nn.Module], ...] = (nn.MultiheadAttention,)


class MaskMismatchError(ValueError):
    """A mask names no parameter of the model, or its shape differs from the parameter's."""


def unwrap_name(name: str, model: nn.Module | None = None) -> str:
    """``name`` without the prefixes that wrappers add (``module.``: DDP / DataParallel,
    ``_orig_mod.``: torch.compile).

    With ``model`` (the model the name belongs to, wrapped or not) only the prefixes of the
    wrappers ``model`` really has are removed, outermost first, so a submodule that is itself
    called ``module`` keeps its name. Without it (names of unknown origin, e.g. a checkpoint's
    keys) every leading ``module.`` / ``_orig_mod.`` goes.
    """
    if model is not None:
        for prefix in wrapper_prefixes(model):
            if not name.startswith(prefix):
                break
            name = name[len(prefix) :]
        return name
    changed = True
    while changed:
        changed = False
        for prefix in _WRAPPER_PREFIXES:
            if name.startswith(prefix):
                name, changed = name[len(prefix) :], True
    return name


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
            if not is_elementwise(nxt):
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
        if all(is_elementwise(m) for m in between):
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
    """Module names of the stand-alone Linear layers :func:`condense` replaces (masked, forward
    called; the projections inside ``nn.MultiheadAttention`` condense with their module).

    ``masks`` maps parameter names (prefixes ``module.``/``_orig_mod.`` allowed) to masks.
    """
    keys = set(_normalise_names(model, masks).values())
    model = unwrap_model(model)
    skipped = _skipped_linears(model)
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and f"{name}.weight" in keys and name not in skipped
    ]


def _normalise_names(model: nn.Module, masks: Mapping[str, Any]) -> dict[str, str]:
    """{mask key: parameter name in the unwrapped model}.

    A key that names a parameter of the unwrapped model stays as it is (a submodule may be
    called ``module``); else the prefixes of ``model``'s own wrappers are removed
    (:func:`unwrap_name` with the model); a key that still names no parameter but does so
    without its leading ``module.`` / ``_orig_mod.`` (masks saved from a wrapped model,
    applied to the bare one) loses those. Other keys are returned as they are, to be refused.
    """
    params = dict(unwrap_model(model).named_parameters(remove_duplicate=False))
    out = {}
    for key in masks:
        name = str(key)
        if name not in params:
            name = unwrap_name(name, model)
        if name not in params and unwrap_name(name) in params:
            name = unwrap_name(name)
        out[key] = name
    return out


def _normalise_masks(model: nn.Module, masks: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Masks keyed by the parameter names of the unwrapped ``model``, as bool tensors; checked.

    ``model`` may be wrapped (DDP, torch.compile): a key may carry its wrappers' prefixes.
    Every name of a shared (tied) parameter counts: the trainer names a tied weight after the
    Linear layer that owns it, which ``named_parameters()`` would hide behind its first owner.
    """
    names = _normalise_names(model, masks)
    model = unwrap_model(model)
    params = dict(model.named_parameters(remove_duplicate=False))
    out: dict[str, torch.Tensor] = {}
    for key, mask in masks.items():
        name = names[key]
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


@torch.no_grad()
def _constant_outputs(between: list[nn.Module], values: torch.Tensor) -> torch.Tensor:
    """The elementwise chain applied to ``values`` [n] in eval mode (Dropout = identity)."""
    return run_in_eval(between, values.unsqueeze(0)).squeeze(0)


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
        new_m2 = refill(kept, m2.sum(dim=1) - kept.sum(dim=1))
        if new_m2 is None:
            return False  # a row cannot keep its fan-in in the narrower layer: keep the neurons

    b1 = lin1.bias[ablated] if lin1.bias is not None else lin1.weight.new_zeros(n_ablated)
    const = _constant_outputs(between, b1.clone())
    w2 = lin2.weight * m2 if m2 is not None else lin2.weight
    add_to_bias(lin2, (w2[:, ablated].double() @ const.double()).to(lin2.weight.dtype))
    keep_units(lin1, lin2, keep)
    masks[f"{first}.weight"] = m1[keep].clone()
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


def _needs_constant_fan_in(backend: str, conv: bool) -> bool:
    """Whether ``backend``'s Linear (or Conv2d) module stores the constant fan-in form."""
    import backends
    from backends.condensed import CondensedLinear
    from backends.conv import CondensedConv2d, conv_class

    if conv:
        cls = conv_class(backend)
        return cls is not None and issubclass(cls, CondensedConv2d)
    return issubclass(backends.get(backend), CondensedLinear)


def _fan_in_problem(mask: torch.Tensor) -> str | None:
    """Why ``mask`` (rows = output neurons/channels) does not condense, else None
    (:func:`backends.condensed.fan_in_problem`)."""
    from backends.condensed import fan_in_problem

    return fan_in_problem(mask.flatten(1).sum(dim=1), mask[0].numel())


def _attention_masks(name: str, mha: nn.MultiheadAttention, masks: Mapping[str, torch.Tensor]):
    keys = ["out_proj.weight"]
    keys += (
        ["in_proj_weight"]
        if mha._qkv_same_embed_dim
        else ["q_proj_weight", "k_proj_weight", "v_proj_weight"]
    )
    return {k: masks.get(f"{name}.{k}") for k in keys}


def _kept_layers(
    model: nn.Module, masks: Mapping[str, torch.Tensor], backend: str
) -> dict[str, str]:
    """{module name: why it cannot be condensed} over the masked Conv2d, Linear and attention
    modules of ``model`` (before any is replaced)."""
    from backends.conv import conv_supports
    from srigl.condensed_attention import attention_unsupported

    kept: dict[str, str] = {}
    lin_fan = _needs_constant_fan_in(backend, conv=False)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d) and f"{name}.weight" in masks:
            why = conv_unsupported(mod)
            if why is None:
                ok, why_not = conv_supports(backend, mod.weight.device, mod.weight.dtype)
                why = None if ok else why_not
            if why is None and _needs_constant_fan_in(backend, conv=True):
                why = _fan_in_problem(masks[f"{name}.weight"])
            if why:
                kept[name] = why
        elif isinstance(mod, nn.MultiheadAttention):
            parts = _attention_masks(name, mod, masks)
            if all(m is None for m in parts.values()):
                continue
            why = attention_unsupported(mod)
            if why is None and lin_fan:
                for key, m in parts.items():
                    if m is not None and (problem := _fan_in_problem(m)):
                        why = f"{key}: {problem}"
                        break
            if why:
                kept[name] = why
        elif isinstance(mod, nn.Linear) and f"{name}.weight" in masks and lin_fan:
            why = _fan_in_problem(masks[f"{name}.weight"])
            if why:
                kept[name] = why
    return kept


def _condensed_attention(
    name: str, mha: nn.MultiheadAttention, masks: Mapping[str, torch.Tensor], backend: str
) -> nn.Module:
    """The CondensedMultiheadAttention of ``mha`` (weights already masked); unmasked
    projections use the ``dense`` backend."""
    import backends
    from srigl.condensed_attention import CondensedMultiheadAttention

    parts = _attention_masks(name, mha, masks)

    def layer(key: str, weight: torch.Tensor, bias: torch.Tensor | None, lname: str):
        mask = parts[key]
        weight = weight.detach()
        bias = bias.detach() if bias is not None else None
        if mask is None:
            ones = torch.ones(weight.shape, dtype=torch.bool, device=weight.device)
            return backends.create("dense", weight, ones, bias, layer_name=lname)
        return backends.create(backend, weight, mask, bias, layer_name=lname)

    out = layer("out_proj.weight", mha.out_proj.weight, mha.out_proj.bias, f"{name}.out_proj")
    if mha._qkv_same_embed_dim:
        inp = layer("in_proj_weight", mha.in_proj_weight, mha.in_proj_bias, f"{name}.in_proj")
        return CondensedMultiheadAttention(mha, inp, out)
    biases = mha.in_proj_bias.chunk(3) if mha.in_proj_bias is not None else (None, None, None)
    q, k, v = (
        layer(f"{p}_proj_weight", getattr(mha, f"{p}_proj_weight"), b, f"{name}.{p}_proj")
        for p, b in zip("qkv", biases)
    )
    return CondensedMultiheadAttention(mha, None, out, q_proj=q, k_proj=k, v_proj=v)


def _backend_layer(
    backend: str, name: str, layer: nn.Linear | nn.Conv2d, masks: Mapping[str, torch.Tensor]
) -> nn.Module:
    """Backend ``backend``'s module for the masked Linear or Conv2d ``layer`` called ``name``."""
    import backends

    bias = layer.bias.detach() if layer.bias is not None else None
    options = conv_args(layer) if isinstance(layer, nn.Conv2d) else {}
    weight = layer.weight.detach()
    return backends.create(
        backend, weight, masks[f"{name}.weight"], bias, layer_name=name, **options
    )


def condense(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    backend: str = "fused",
    structured: bool = False,
    fold_bn: bool = True,
    strict: bool = False,
    fuse_epilogues: bool = False,
) -> nn.Module:
    """A copy of ``model`` whose masked Linear, Conv2d and attention layers are condensed.

    Args:
        model: the trained model (DDP / torch.compile wrappers are unwrapped; not modified).
            Call ``model.eval()`` first to fold BatchNorm (train-mode BNs are left alone).
        masks: {parameter name: bool (or 0/1) tensor of the parameter's shape}, e.g.
            ``trainer.masks``; names may carry ``module.`` / ``_orig_mod.`` prefixes.
        backend: a name from ``backends.names()``.
        structured: also remove ablated neurons / channels where exact (module docstring).
        fold_bn: fold eval-mode BatchNorm2d layers into the convolution before them.
        strict: raise instead of keeping a layer that cannot be condensed masked-dense.
        fuse_epilogues: hand the ReLU / residual add after a condensed conv to that layer where
            the backend's kernel applies them as it writes its output (:mod:`srigl.epilogues`;
            ``fused`` on CPU; opt in). Where anything fuses, the result is a
            ``torch.fx.GraphModule`` with the same submodule names and state-dict keys, not an
            instance of the model's class (see :mod:`srigl.epilogues` for what that changes).

    Returns:
        A new module computing the same function as ``model`` with every masked parameter
        multiplied by its mask (outputs allclose in the weights' dtype). Its attribute
        ``condense_report`` (:class:`srigl.condense_report.CondenseReport`) lists the condensed
        layers, folded BNs, removed channels and the layers kept masked-dense with the reason.

    Raises:
        UnknownNameError: ``backend`` is not registered (lists the known names).
        BackendUnavailableError: ``backend`` cannot run on the model's device.
        MaskMismatchError: a mask names no parameter or has the wrong shape.
        ValueError: with ``strict=True``, a layer that cannot be condensed (names it and why).
    """
    import backends

    backends.get(backend)  # fail fast on an unknown name, before copying the model
    base = unwrap_model(model)
    norm_masks = _normalise_masks(model, masks)
    small = copy.deepcopy(base)
    params = dict(small.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, mask in norm_masks.items():
            params[name].mul_(mask.to(params[name].dtype))

    report = CondenseReport()
    has_conv = any(isinstance(m, nn.Conv2d) for m in small.modules())
    graph = trace_graph(small) if has_conv and (fold_bn or structured) else None
    report.traced = graph is not None
    if fold_bn:
        for conv_name, bn_name in conv_bn_pairs(small, graph):
            fold_bn_into_conv(small, conv_name, bn_name)
            report.folded.append((conv_name, bn_name))

    report.pools = channels_last_pooling(small)  # the folded baseline of the bench does too
    kept = _kept_layers(small, norm_masks, backend)
    if strict and kept:
        name, why = next(iter(kept.items()))
        raise ValueError(f"layer {name!r} cannot be condensed with {backend!r}: {why}")
    if structured:
        report.removed.update(_remove_ablated_units(small, norm_masks, graph, kept))
    _replace_layers(small, norm_masks, backend, strict, kept, report)
    report.kept = kept
    if fuse_epilogues and has_conv:
        small, report.epilogues = fuse_conv_epilogues(small)
    _log_report(backend, report)
    small.condense_report = report
    return small


def _remove_ablated_units(
    small: nn.Module,
    masks: dict[str, torch.Tensor],
    graph: Any,
    kept: Mapping[str, str],
) -> dict[str, int]:
    """``structured=True``: remove ablated neurons (Linear pairs) and output channels (conv
    pairs, traced ``graph`` only) where exact; ``masks`` is updated in place.

    Returns:
        {module name: neurons / channels removed}.
    """
    removed: dict[str, int] = {}
    for first, between, second in _structured_pairs(small):
        width = small.get_submodule(first).out_features
        if _drop_ablated_neurons(small, masks, first, between, second):
            removed[first] = width - small.get_submodule(first).out_features
    for pair in conv_channel_pairs(small, graph):
        if pair.first in kept or pair.second in kept:
            continue
        n = drop_ablated_channels(small, masks, pair)
        if n:
            removed[pair.first] = n
    return removed


def _replace_layers(
    small: nn.Module,
    masks: Mapping[str, torch.Tensor],
    backend: str,
    strict: bool,
    kept: dict[str, str],
    report: CondenseReport,
) -> None:
    """Swap every masked attention, Linear and Conv2d module of ``small`` not in ``kept`` for
    its condensed module (in every slot it is registered in). A layer the backend refuses
    (FanInError, BadInputError) is added to ``kept`` with the reason, or re-raised if
    ``strict``; the condensed names go to ``report.condensed``."""
    from backends.base import BadInputError
    from backends.condensed import FanInError

    # a module registered in several slots (reused in forward) is replaced in all of them
    slots: dict[int, list[str]] = {}
    for name, mod in small.named_modules(remove_duplicate=False):
        slots.setdefault(id(mod), []).append(name)

    def replace(name: str, old: nn.Module, build) -> None:
        try:
            new = build()
        except (FanInError, BadInputError) as err:
            if strict:
                raise
            kept[name] = str(err)
            return
        new.train(old.training)
        for slot in slots[id(old)]:
            set_child(small, slot, new)
        report.condensed.append(name)

    for name, mod in list(small.named_modules()):
        if isinstance(mod, nn.MultiheadAttention) and name not in kept:
            if any(m is not None for m in _attention_masks(name, mod, masks).values()):
                replace(name, mod, lambda n=name, m=mod: _condensed_attention(n, m, masks, backend))
    linears = [n for n in condensable_linears(small, masks) if n not in kept]
    convs = [
        n
        for n, m in small.named_modules()
        if isinstance(m, nn.Conv2d) and f"{n}.weight" in masks and n not in kept
    ]
    for name in linears + convs:
        mod = small.get_submodule(name)
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            replace(name, mod, lambda n=name, m=mod: _backend_layer(backend, n, m, masks))


def _log_report(backend: str, report: CondenseReport) -> None:
    """One warning per layer kept masked-dense, one info line with the counts."""
    for name, why in report.kept.items():
        log.warning("condense: layer %r stays masked-dense: %s", name, why)
    log.info(
        "condense(%s): %d layers condensed, %d BatchNorms folded, %d kept masked-dense, "
        "%d channels/neurons removed, %d epilogues fused",
        backend,
        len(report.condensed),
        len(report.folded),
        len(report.kept),
        sum(report.removed.values()),
        len(report.epilogues),
    )


def load_condensed(
    skeleton: nn.Module,
    masks: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor] | str | os.PathLike,
    backend: str = "fused",
    structured: bool = False,
    map_location: str | torch.device | None = None,
    fold_bn: bool = True,
    fuse_epilogues: bool = False,
) -> nn.Module:
    """Rebuild a condensed model saved with ``torch.save(small.state_dict(), path)``.

    The structure of a condensed model depends on the architecture and the masks, so
    condensing a freshly built model of the same architecture (``skeleton``, any weights) with
    the same ``masks``, ``backend``, ``structured`` and ``fold_bn`` and then loading the saved
    state dict gives the saved model back. Condensed layers take the saved shapes (channels
    that ``structured`` removed depend on the saved biases). With ``fold_bn`` the skeleton is
    condensed in eval mode (BN folding needs it; the result is in eval mode), unless the saved
    state still holds the BatchNorms (a model condensed in train mode, which folds none).

    Args:
        skeleton: a model of the original architecture (not modified).
        masks: the masks the saved model was condensed with.
        state_dict: the saved state dict, or a path to it (read with ``weights_only=True``).
        backend, structured, fold_bn, fuse_epilogues: as given to :func:`condense`.
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
    if fold_bn:
        skeleton, fold_bn = _skeleton_as_saved(skeleton, state_dict)
    small = condense(
        skeleton,
        masks,
        backend=backend,
        structured=structured,
        fold_bn=fold_bn,
        fuse_epilogues=fuse_epilogues,
    )
    small.load_state_dict(state_dict)
    return small


def _skeleton_as_saved(
    skeleton: nn.Module, state_dict: Mapping[str, Any]
) -> tuple[nn.Module, bool]:
    """(model to condense, fold_bn) that rebuild the saved model's structure: condense folds
    only the eval-mode BatchNorms that directly follow a conv (others stay in any case), so the
    saved state was folded unless one of those foldable BNs kept its statistics there (the
    model was condensed in train mode). Folding needs the skeleton in eval mode (a copy)."""
    base = copy.deepcopy(unwrap_model(skeleton)).eval()
    if not any(isinstance(m, nn.Conv2d) for m in base.modules()):
        return base, True
    foldable = [bn for _, bn in conv_bn_pairs(base, trace_graph(base))]
    if any(f"{bn}.running_mean" in state_dict for bn in foldable):
        return skeleton, False  # saved unfolded: rebuilt as given (its mode kept)
    return base, True
