"""Convolution parts of :mod:`srigl.condense`: the dataflow between layers (``torch.fx``), exact
BatchNorm folding, and the exact removal of ablated output channels.

Where a model does not trace with ``torch.fx`` the dataflow falls back to ``nn.Sequential`` order
(conv directly followed by BN inside one Sequential); structured channel removal then does
nothing (it needs the graph to prove that a channel only feeds the next convolution).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from srigl._surgery import add_to_bias, keep_units, refill, run_in_eval, set_child
from srigl.condense_report import CondenseReport
from srigl.elementwise import ELEMENTWISE_FUNCTIONS, ELEMENTWISE_METHODS, ELEMENTWISE_MODULES

log = logging.getLogger(__name__)

__all__ = [
    "CondenseReport",
    "ChannelPair",
    "conv_bn_pairs",
    "conv_channel_pairs",
    "conv_unsupported",
    "drop_ablated_channels",
    "fold_batchnorm",
    "fold_bn_into_conv",
    "LEAF_MODULES",
    "LeafTracer",
    "trace_graph",
]


#: srigl's own layers kept whole in a trace (channels-last pooling, condensed attention)
LEAF_MODULES = ("srigl.pooling", "srigl.condensed_attention")


class LeafTracer(fx.Tracer):
    """fx tracer that keeps convs, norms, linears, attention, the backends' layers and srigl's
    own layers (:data:`LEAF_MODULES`) as leaves: condense's dataflow and
    :mod:`srigl.epilogues` trace with it."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        from backends.base import Backend

        if isinstance(m, (nn.Conv2d, nn.modules.batchnorm._BatchNorm, nn.Linear)):
            return True
        if isinstance(m, (nn.MultiheadAttention, Backend)) or type(m).__module__ in LEAF_MODULES:
            return True
        return super().is_leaf_module(m, qualname)


def trace_graph(model: nn.Module) -> fx.Graph | None:
    """The model's fx graph (convs, BNs, linears, attention as leaf calls), or None."""
    try:
        return LeafTracer().trace(model)
    except Exception as err:  # models with data-dependent control flow do not trace
        log.info(
            "condense: %s does not trace with torch.fx (%s); using module order",
            type(model).__name__,
            err,
        )
        return None


def _module_calls(graph: fx.Graph) -> dict[str, list[fx.Node]]:
    calls: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls.setdefault(str(node.target), []).append(node)
    return calls


def _is_bn(mod: nn.Module) -> bool:
    cls = type(mod)
    if cls is nn.BatchNorm2d:
        return True
    # timm's BatchNormAct2d: BN, then drop and act (folded BN -> Sequential(drop, act))
    return (
        cls.__name__ == "BatchNormAct2d"
        and isinstance(mod, nn.BatchNorm2d)
        and hasattr(mod, "act")
        and hasattr(mod, "drop")
    )


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and _is_bn(bn)
        and not bn.training
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
    )


def conv_bn_pairs(model: nn.Module, graph: fx.Graph | None) -> list[tuple[str, str]]:
    """(conv, bn) module names where the eval-mode BN's input is exactly that conv's output.

    Both modules are called once; the conv's output has no other user.
    """
    pairs = []
    if graph is not None:
        calls = _module_calls(graph)
        for name, nodes in calls.items():
            if len(nodes) != 1:
                continue
            node = nodes[0]
            users = list(node.users)
            if len(users) != 1 or users[0].op != "call_module":
                continue
            bn_name = str(users[0].target)
            if len(calls.get(bn_name, [])) != 1 or users[0].args[:1] != (node,):
                continue
            if _foldable(model.get_submodule(name), model.get_submodule(bn_name)):
                pairs.append((name, bn_name))
        return pairs
    uses: dict[int, int] = {}
    for _, mod in model.named_modules(remove_duplicate=False):
        uses[id(mod)] = uses.get(id(mod), 0) + 1
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Sequential) or type(mod).forward is not nn.Sequential.forward:
            continue
        children = [(n, m) for n, m in mod._modules.items() if m is not None]
        prefix = f"{name}." if name else ""
        for (n1, m1), (n2, m2) in zip(children, children[1:]):
            if uses[id(m1)] == 1 and uses[id(m2)] == 1 and _foldable(m1, m2):
                pairs.append((prefix + n1, prefix + n2))
    return pairs


@torch.no_grad()
def fold_bn_into_conv(model: nn.Module, conv_name: str, bn_name: str) -> None:
    """Fold eval BN ``bn_name`` into conv ``conv_name`` (in place); the BN becomes Identity (or,
    for timm's BatchNormAct2d, ``Sequential(drop, act)``)."""
    conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
    w = conv.weight
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(shift)
    conv.weight = nn.Parameter((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype))
    conv.bias = nn.Parameter((bias * scale + shift).to(w.dtype))
    after: nn.Module = nn.Identity()
    if type(bn) is not nn.BatchNorm2d:
        after = nn.Sequential(bn.drop, bn.act)
    set_child(model, bn_name, after)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (call ``.eval()`` first) with every BN that directly follows a conv
    folded into it: the BN-folded dense baseline. Train-mode BNs are left alone.

    Returns:
        The copy; ``copy.condense_report.folded`` lists the folded (conv, bn) pairs.
    """
    small = copy.deepcopy(model)
    report = CondenseReport()
    graph = trace_graph(small)
    report.traced = graph is not None
    for conv_name, bn_name in conv_bn_pairs(small, graph):
        fold_bn_into_conv(small, conv_name, bn_name)
        report.folded.append((conv_name, bn_name))
    small.condense_report = report
    return small


def conv_unsupported(conv: nn.Conv2d) -> str | None:
    """Why ``conv`` cannot be condensed (None if it can); see :func:`conv_args`."""
    if type(conv).forward is not nn.Conv2d.forward or (
        type(conv)._conv_forward is not nn.Conv2d._conv_forward
    ):
        return f"{type(conv).__name__} has its own forward (not plain nn.Conv2d)"
    if conv.padding_mode != "zeros":
        return f"padding_mode={conv.padding_mode!r} (condensed convolutions pad with zeros)"
    if isinstance(conv.padding, str) and conv.padding == "same":
        for k, d, s in zip(conv.kernel_size, conv.dilation, conv.stride):
            if (d * (k - 1)) % 2 or s != 1:
                return "padding='same' is asymmetric for this kernel/dilation"
    return None


def conv_args(conv: nn.Conv2d) -> dict[str, Any]:
    """stride, padding (ints; 'valid'/'same' resolved), dilation, groups of ``conv``."""
    padding = conv.padding
    if padding == "valid":
        padding = (0, 0)
    elif padding == "same":
        padding = tuple(d * (k - 1) // 2 for k, d in zip(conv.kernel_size, conv.dilation))
    return {
        "stride": tuple(conv.stride),
        "padding": tuple(padding),
        "dilation": tuple(conv.dilation),
        "groups": conv.groups,
    }


@dataclass
class ChannelPair:
    """Conv ``first``'s output goes through elementwise ``chain`` only into conv ``second``."""

    first: str
    chain: list[Callable[[torch.Tensor], torch.Tensor]]
    second: str


def _elementwise_step(
    model: nn.Module, node: fx.Node
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The node's function on a constant [1, C, 1, 1] input if it is elementwise, else None."""
    if len(node.args) < 1 or not isinstance(node.args[0], fx.Node):
        return None
    extra = [a for a in node.args[1:]]
    if node.op == "call_module":
        mod = model.get_submodule(str(node.target))
        parts = list(mod) if type(mod) is nn.Sequential else [mod]
        if extra or node.kwargs or not all(type(p) in ELEMENTWISE_MODULES for p in parts):
            return None
        return lambda x, parts=parts: run_in_eval(parts, x)
    kwargs = {k: v for k, v in node.kwargs.items() if k not in ("inplace", "training")}
    if node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
        if any(isinstance(a, fx.Node) for a in extra) or any(
            isinstance(v, fx.Node) for v in kwargs.values()
        ):
            return None
        fn = node.target
        if fn is F.dropout:
            return lambda x: x
        extra = [a for a in extra if not isinstance(a, bool)] if fn is F.relu else extra
        return lambda x, fn=fn, extra=extra, kwargs=kwargs: fn(x, *extra, **kwargs)
    if node.op == "call_method" and node.target in ELEMENTWISE_METHODS and not extra:
        name = str(node.target).rstrip("_")
        return lambda x, name=name: getattr(x, name)()
    return None


def conv_channel_pairs(model: nn.Module, graph: fx.Graph | None) -> list[ChannelPair]:
    """Every (conv, elementwise chain, conv) where the first conv's output reaches only the
    second conv (each node on the way has one user); both convs groups=1 and called once."""
    if graph is None:
        return []
    calls = _module_calls(graph)
    pairs = []
    for name, nodes in calls.items():
        mod = model.get_submodule(name)
        if not isinstance(mod, nn.Conv2d) or len(nodes) != 1 or mod.groups != 1:
            continue
        node, chain = nodes[0], []
        while True:
            users = list(node.users)
            if len(users) != 1:
                break
            nxt = users[0]
            if nxt.op == "call_module" and isinstance(
                model.get_submodule(str(nxt.target)), nn.Conv2d
            ):
                second = str(nxt.target)
                conv2 = model.get_submodule(second)
                if (
                    nxt.args[:1] == (node,)
                    and len(calls[second]) == 1
                    and conv2.groups == 1
                    and second != name
                ):
                    pairs.append(ChannelPair(name, chain, second))
                break
            step = _elementwise_step(model, nxt)
            if step is None or nxt.args[0] is not node:
                break
            chain.append(step)
            node = nxt
    return pairs


@torch.no_grad()
def drop_ablated_channels(
    model: nn.Module, masks: dict[str, torch.Tensor], pair: ChannelPair
) -> int:
    """Remove the ablated output channels of conv ``pair.first`` (and the next conv's matching
    input channels) where exact; returns how many were removed (0: nothing changed)."""
    conv1, conv2 = model.get_submodule(pair.first), model.get_submodule(pair.second)
    m1, m2 = masks.get(f"{pair.first}.weight"), masks.get(f"{pair.second}.weight")
    if m1 is None or m2 is None:
        return 0
    ablated = ~m1.flatten(1).any(dim=1)
    if not bool(ablated.any()):
        return 0
    b1 = conv1.bias if conv1.bias is not None else conv1.weight.new_zeros(conv1.out_channels)
    const = b1.detach().clone().view(1, -1, 1, 1)
    for step in pair.chain:
        const = step(const)
    const = const.flatten()
    if const.numel() != conv1.out_channels:
        return 0
    pointwise = conv2.kernel_size == (1, 1) and tuple(conv_args(conv2)["padding"]) == (0, 0)
    remove = ablated if pointwise else ablated & (const == 0)
    n_remove = int(remove.sum())
    if n_remove == 0 or n_remove == conv1.out_channels:
        return 0
    keep = ~remove
    out2, _, kh, kw = conv2.weight.shape
    kept = m2[:, keep].reshape(out2, -1)
    lost = m2.flatten(1).sum(dim=1) - kept.sum(dim=1)
    new_m2 = refill(kept, lost)
    if new_m2 is None:
        return 0
    if pointwise:
        w2 = (conv2.weight * m2)[:, remove, 0, 0]
        add_to_bias(conv2, (w2.double() @ const[remove].double()).to(conv2.weight.dtype))
    keep_units(conv1, conv2, keep)
    masks[f"{pair.first}.weight"] = m1[keep].clone()
    masks[f"{pair.second}.weight"] = new_m2.reshape(out2, -1, kh, kw)
    return n_remove
