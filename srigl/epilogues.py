"""Epilogue fusion: the ReLU and the residual add that follow a condensed convolution, handed to
that layer so its kernel applies them as it writes the output (a ``torch.fx`` rewrite that
:func:`srigl.condense` applies to the layers of backends that fuse them, ``fuses_epilogue``).

In a ResNet block, ``relu(bn(conv(x)))`` with the BN folded and ``relu(bn3(conv3(x)) + identity)``
each cost a pass over the output after the conv: on the project's machines (torch 2.14.1, 2
threads, batch 1) ResNet-50's ReLUs and skip adds took 1.3 ms of the condensed model's 15 ms, more
than in the dense model, because the pass re-reads an output that the conv's work items wrote
from the other core's cache. Fused, ``relu(conv(x) + identity)`` is one write.

What is fused, in the traced graph (``torch.fx``):
- a conv layer whose class has ``fuses_epilogue``, called once, whose output (through any
  ``nn.Identity``, e.g. a folded BatchNorm) has one user that is a ReLU (``nn.ReLU``,
  ``F.relu``, ``torch.relu``, ``Tensor.relu``/``relu_``): the layer gets ``epilogue_relu``;
- that output's one user being ``a + b`` (``operator.add``/``iadd``, ``torch.add`` without
  ``alpha``) with another tensor: the add moves into the layer (``conv(x, residual=other)``,
  called where the add was, so ``other`` is computed first), and a ReLU that is the add's one
  user goes with it.

Values are unchanged (the same sums in the same order, ReLU propagates NaN). The add moves only
where no node between the conv and the add may write into a tensor (an in-place op or module).
A model that does not trace, whose traced forward differs between train and eval mode (a branch
on ``self.training`` would be frozen), or in which nothing is fused, is returned as it is;
otherwise the result is a ``torch.fx.GraphModule`` with the same submodule names and state-dict
keys (modules that no longer run, such as a fused ``nn.ReLU``, are left out of it). Opt in:
a GraphModule is not an instance of the model's class (its own methods and root attributes are
not on it), and fx records an augmented assignment (``b *= 2``) out of place, so an alias of
``b`` elsewhere in forward would no longer see the change.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from srigl.condense_conv import LEAF_MODULES, LeafTracer

log = logging.getLogger(__name__)

__all__ = ["fuse_epilogues"]

_RELU_FUNCTIONS: set[Callable[..., Any]] = {F.relu, torch.relu, torch.relu_}
_RELU_METHODS = {"relu", "relu_"}
_ADD_FUNCTIONS: set[Callable[..., Any]] = {operator.add, operator.iadd, torch.add}


def _module(gm: nn.Module, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return gm.get_submodule(str(node.target))


def _hooked(mod: nn.Module) -> bool:
    return bool(mod._forward_hooks or mod._forward_pre_hooks)


def _is_relu(gm: nn.Module, node: fx.Node) -> bool:
    """A ReLU of one tensor (its only argument), as a module, function or method call."""
    if node.op == "call_module":
        mod = _module(gm, node)
        return type(mod) is nn.ReLU and not _hooked(mod) and len(node.args) == 1
    if node.op == "call_function" and node.target in _RELU_FUNCTIONS:
        extra = dict(node.kwargs)
        extra.pop("inplace", None)
        return len(node.args) == 1 and not extra
    if node.op == "call_method" and node.target in _RELU_METHODS:
        return len(node.args) == 1 and not node.kwargs
    return False


def _is_identity(gm: nn.Module, node: fx.Node) -> bool:
    mod = _module(gm, node)
    return type(mod) is nn.Identity and not _hooked(mod) and len(node.args) == 1


def _other_addend(node: fx.Node, value: fx.Node) -> fx.Node | None:
    """The other tensor of ``node`` when it is ``value + other`` (or ``other + value``)."""
    if node.op != "call_function" or node.target not in _ADD_FUNCTIONS:
        return None
    if node.kwargs or len(node.args) != 2:  # torch.add's alpha / out
        return None
    a, b = node.args
    if node.target is operator.iadd:  # `other += value` would write into other: not moved
        other = b if a is value else None
    else:
        other = b if a is value else a if b is value else None
    if not isinstance(other, fx.Node) or other is value:
        return None
    return other


_IN_PLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
    operator.imatmul,
    operator.setitem,
}


def _may_mutate(gm: nn.Module, node: fx.Node) -> bool:
    """Whether ``node`` may write into a tensor it is given (an in-place function or method,
    ``out=`` / ``inplace=True``, a module with ``inplace`` set or not from torch.nn / ours)."""
    if node.kwargs.get("inplace") or "out" in node.kwargs:
        return True
    if node.op == "call_function":
        return node.target in _IN_PLACE_OPERATORS or getattr(node.target, "__name__", "").endswith(
            "_"
        )
    if node.op == "call_method":
        return str(node.target).endswith("_")
    if node.op == "call_module":
        from backends.base import Backend

        mod = gm.get_submodule(str(node.target))
        if getattr(mod, "inplace", False):
            return True
        if isinstance(mod, Backend) or type(mod).__module__ in LEAF_MODULES:
            return False
        return not type(mod).__module__.startswith("torch.nn.")
    return False


def _mutation_between(gm: nn.Module, first: fx.Node, last: fx.Node) -> bool:
    """Whether a node after ``first`` and before ``last`` (graph order) may mutate a tensor:
    moving a call from ``first`` to ``last`` could then change what it reads."""
    node = first.next
    while node is not last:
        if _may_mutate(gm, node):
            return True
        node = node.next
    return False


def _only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _fusable_convs(gm: fx.GraphModule) -> list[fx.Node]:
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    found = []
    for node in gm.graph.nodes:
        mod = _module(gm, node)
        if (
            mod is not None
            and getattr(type(mod), "fuses_epilogue", False)
            and not getattr(mod, "epilogue_relu", False)
            and calls[str(node.target)] == 1
            and len(node.args) == 1
            and not node.kwargs
            and not _hooked(mod)
            and getattr(mod, "device", torch.device("cpu")).type == "cpu"  # CUDA: no gain
        ):
            found.append(node)
    return found


def _fuse_one(gm: fx.GraphModule, conv: fx.Node) -> str | None:
    """Fuse what follows ``conv`` into it; returns what was fused ("relu", "add", "add+relu") or
    None."""
    end = conv  # the conv's value, seen through Identity modules
    while (user := _only_user(end)) is not None and _is_identity(gm, user):
        end = user
    user = _only_user(end)
    if user is None:
        return None
    mod = gm.get_submodule(str(conv.target))
    graph = gm.graph
    if _is_relu(gm, user):
        mod.epilogue_relu = True
        user.replace_all_uses_with(end)
        graph.erase_node(user)
        return "relu"
    other = _other_addend(user, end)
    if other is None or _mutation_between(gm, conv, user):
        return None
    with graph.inserting_before(user):
        fused = graph.call_module(str(conv.target), (conv.args[0],), {"residual": other})
    done = "add"
    after = _only_user(user)
    result = user
    if after is not None and _is_relu(gm, after):
        mod.epilogue_relu = True
        result = after
        done = "add+relu"
    result.replace_all_uses_with(fused)
    if result is not user:
        graph.erase_node(result)
    graph.erase_node(user)
    while end is not conv:  # the Identity chain, then the conv's first call
        before = end.args[0]
        graph.erase_node(end)
        end = before
    graph.erase_node(conv)
    return done


def _keep_stateful_modules(model: nn.Module, gm: fx.GraphModule) -> None:
    """Put back the submodules with parameters or buffers that forward does not call (a
    GraphModule holds only what its graph uses), so the state dict keeps every key."""
    present = {name for name, _ in gm.named_modules()}
    for name, mod in model.named_modules():
        if not name or name in present:
            continue
        if (
            any(True for _ in mod.parameters(recurse=False))
            or any(True for _ in mod.buffers(recurse=False))
            or type(mod).get_extra_state is not nn.Module.get_extra_state
        ):
            if gm.add_submodule(name, mod):
                present.update(f"{name}.{sub}" if sub else name for sub, _ in mod.named_modules())


def _code(graph: fx.Graph) -> str:
    return graph.python_code(root_module="self").src


def _trace_in_the_other_mode(model: nn.Module) -> fx.Graph:
    """The graph of ``model`` traced in the other train/eval mode (modes restored after)."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.train(not model.training)
        return LeafTracer().trace(model)
    finally:
        for m, training in modes.items():
            m.training = training


def fuse_epilogues(model: nn.Module) -> tuple[nn.Module, dict[str, str]]:
    """Hand each fusable conv of ``model`` the ReLU / residual add after it (module docstring).

    Args:
        model: a model whose condensed layers are in place (not modified where nothing fuses;
            the fused layers' ``epilogue_relu`` is set on the model's own modules otherwise).

    Returns:
        (the model, or a ``torch.fx.GraphModule`` of it with the epilogues fused;
        {conv module name: "relu" | "add" | "add+relu"}).
    """
    try:
        graph = LeafTracer().trace(model)
        other_mode = _trace_in_the_other_mode(model)
    except Exception as err:  # data-dependent control flow, unsupported ops
        log.info("epilogue fusion: %s does not trace with torch.fx (%s)", type(model).__name__, err)
        return model, {}
    if _code(graph) != _code(other_mode):  # a GraphModule would freeze the mode's branch
        log.info("epilogue fusion: %s's forward depends on train/eval mode; not fused", model)
        return model, {}
    name = type(model).__name__
    gm = fx.GraphModule(model, graph, class_name=name)
    if not any(True for _ in _fusable_convs(gm)):
        return model, {}
    keys = set(model.state_dict())
    fused: dict[str, str] = {}
    for conv in _fusable_convs(gm):
        what = _fuse_one(gm, conv)
        if what is not None:
            fused[str(conv.target)] = what
    if not fused:
        return model, {}
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    _keep_stateful_modules(model, gm)
    if set(gm.state_dict()) != keys:  # e.g. a root buffer forward never reads: keep the model
        for target in fused:
            model.get_submodule(target).epilogue_relu = False
        log.info("epilogue fusion: %s's state-dict keys would change; not fused", name)
        return model, {}
    gm.train(model.training)
    return gm, fused
