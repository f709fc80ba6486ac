"""Model-size and cost metrics of a (sparse) model: accuracy, parameters, FLOPs, bytes.

Three views of every sparse layer (a weight with a bool mask, rows = output neurons):

- ``dense``: the full weight.
- ``sparse``: the non-zeros only (an unstructured kernel; storage as CSR with int32 indices).
- ``condensed``: the constant fan-in form of SPEC.md section 3: ablated rows are skipped and
  every active row holds the layer's largest row fan-in ``k`` (values + indices, int16 when
  the dense fan-in is < 32768). For a constant fan-in (SRigL) mask this equals the sparse
  work; for an unstructured mask it is the padded work a condensed kernel would do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from backends.fused_cpu import kernel_index_dtype


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list:
    """Number of samples whose target is among the top-k logits, for each k.

    Args:
        logits: float [B, C]; target: int64 [B]. A k larger than C counts as C.

    Returns:
        One int per k.
    """
    maxk = min(max(ks), logits.shape[1])
    top = logits.topk(maxk, dim=1).indices  # [B, maxk]
    hits = top.eq(target.unsqueeze(1))
    return [int(hits[:, : min(k, maxk)].any(dim=1).sum()) for k in ks]


@dataclass
class _LayerView:
    """Counts of one weight: numel, non-zeros, active rows and largest row fan-in."""

    numel: int
    nnz: int
    rows: int
    n_active: int
    k_max: int
    dense_fan_in: int


def _layer_view(weight: torch.Tensor, mask: torch.Tensor | None) -> _LayerView:
    rows = weight.shape[0]
    fan_in = weight.numel() // max(rows, 1)
    if mask is None:
        return _LayerView(weight.numel(), weight.numel(), rows, rows, fan_in, fan_in)
    per_row = mask.reshape(rows, -1).sum(dim=1)
    return _LayerView(
        numel=weight.numel(),
        nnz=int(per_row.sum()),
        rows=rows,
        n_active=int((per_row > 0).sum()),
        k_max=int(per_row.max()) if rows else 0,
        dense_fan_in=fan_in,
    )


def _views(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, _LayerView]:
    # every name of a tied weight: the trainer names it after its Linear owner
    params = dict(model.named_parameters(remove_duplicate=False))
    return {name: _layer_view(params[name].detach(), m) for name, m in masks.items()}


def param_counts(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Parameter counts: ``dense`` (all), ``nonzero`` (masked-out entries removed) and
    ``condensed`` (every sparse weight stored as n_active x k_max values)."""
    total = sum(p.numel() for p in model.parameters())
    views = _views(model, masks)
    removed = sum(v.numel - v.nnz for v in views.values())
    condensed = total - sum(v.numel - v.n_active * v.k_max for v in views.values())
    return {"dense": total, "nonzero": total - removed, "condensed": condensed}


def model_bytes(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Bytes of the parameters: ``dense``; ``sparse_csr`` (masked weights as CSR: values +
    int32 column indices + int32 row pointers); ``condensed`` (values + int16/int32 indices of
    n_active x k_max entries + int32 indices of the active rows)."""
    params = dict(model.named_parameters())
    dense = sum(p.numel() * p.element_size() for p in params.values())
    csr = condensed = dense
    every_name = dict(model.named_parameters(remove_duplicate=False))
    for name, v in _views(model, masks).items():
        size = every_name[name].element_size()
        full = v.numel * size
        idx = kernel_index_dtype(v.dense_fan_in).itemsize
        csr += v.nnz * (size + 4) + (v.rows + 1) * 4 - full
        condensed += v.n_active * v.k_max * (size + idx) + v.n_active * 4 - full
    return {"dense": dense, "sparse_csr": csr, "condensed": condensed}


def inference_flops(
    model: nn.Module,
    masks: Mapping[str, torch.Tensor],
    input_shape: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[str, int]:
    """Inference multiply-adds per sample of the weight layers (Linear, Conv, attention
    projections), measured with forward hooks on one forward pass of a [1, *input_shape] zero
    input: ``dense``, ``sparse`` (non-zeros only) and ``condensed`` (n_active x k_max per
    output position). Attention score products and elementwise ops are not counted."""
    names = {m: n for n, m in model.named_modules()}
    views = _views(model, masks)
    totals = {"dense": 0, "sparse": 0, "condensed": 0}

    def add(weight_name: str, weight: torch.Tensor, positions: int) -> None:
        v = views.get(weight_name) or _layer_view(weight, None)
        totals["dense"] += positions * v.numel
        totals["sparse"] += positions * v.nnz
        totals["condensed"] += positions * v.n_active * v.k_max

    def on_layer(module: nn.Module, _inputs, output) -> None:
        out = output[0] if isinstance(output, tuple) else output
        positions = out.numel() // max(module.weight.shape[0], 1)
        add(_join(names[module], "weight"), module.weight, positions)

    def on_attention(module: nn.MultiheadAttention, inputs, _output) -> None:
        query = inputs[0]
        tokens = query.numel() // query.shape[-1]
        if module.in_proj_weight is not None:
            add(_join(names[module], "in_proj_weight"), module.in_proj_weight, tokens)
        else:
            for part in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                add(_join(names[module], part), getattr(module, part), tokens)
        add(_join(names[module], "out_proj.weight"), module.out_proj.weight, tokens)

    handles = []
    for module in model.modules():
        if isinstance(module, nn.MultiheadAttention):
            handles.append(module.register_forward_hook(on_attention))
        elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and not _in_attention(
            names[module], model
        ):
            handles.append(module.register_forward_hook(on_layer))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return totals


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _in_attention(name: str, model: nn.Module) -> bool:
    """Whether module ``name`` is the out_proj of an nn.MultiheadAttention (counted there)."""
    if not name.endswith("out_proj"):
        return False
    parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
    return isinstance(parent, nn.MultiheadAttention)
