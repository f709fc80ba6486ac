"""``nn.MultiheadAttention`` with condensed input and output projections.

``nn.MultiheadAttention`` reads ``in_proj_weight`` and ``out_proj.weight`` directly, so its
projections cannot be swapped for condensed layers one by one. :class:`CondensedMultiheadAttention`
replaces the whole module: q/k/v = the condensed in-projection ([3E, E], one call for
self-attention), ``F.scaled_dot_product_attention`` over the heads, then the condensed
out-projection. It takes the same call as ``nn.MultiheadAttention.forward`` (``batch_first``,
unbatched inputs, ``key_padding_mask`` and ``attn_mask`` bool or float, ``need_weights`` with
``average_attn_weights``, ``is_causal``) and returns ``(output, weights or None)``.
Not covered (``condense`` leaves such modules masked-dense): ``add_bias_kv``, ``add_zero_attn``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CondensedMultiheadAttention", "attention_unsupported"]


def attention_unsupported(mha: nn.MultiheadAttention) -> str | None:
    """Why ``mha`` cannot be condensed (None when it can)."""
    if mha.bias_k is not None or mha.bias_v is not None:
        return "add_bias_kv=True is not supported by the condensed attention"
    if mha.add_zero_attn:
        return "add_zero_attn=True is not supported by the condensed attention"
    return None


class CondensedMultiheadAttention(nn.Module):
    """Equivalent of an ``nn.MultiheadAttention`` whose projections are given layers.

    Args:
        mha: the module replaced (reads its embed_dim, num_heads, dropout, batch_first).
        in_proj: one layer [E] -> [3E] (q, k, v stacked, as ``in_proj_weight``), or None when
            the module has separate ``q_proj``/``k_proj``/``v_proj`` layers.
        q_proj, k_proj, v_proj: layers [E] -> [E], [kdim] -> [E], [vdim] -> [E] (only without
            ``in_proj``).
        out_proj: layer [E] -> [E].
    """

    def __init__(
        self,
        mha: nn.MultiheadAttention,
        in_proj: nn.Module | None,
        out_proj: nn.Module,
        q_proj: nn.Module | None = None,
        k_proj: nn.Module | None = None,
        v_proj: nn.Module | None = None,
    ) -> None:
        super().__init__()
        why = attention_unsupported(mha)
        if why:
            raise ValueError(why)
        if (in_proj is None) == (q_proj is None):
            raise ValueError("give either in_proj or q_proj/k_proj/v_proj")
        self.embed_dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.head_dim = mha.head_dim
        self.dropout = float(mha.dropout)
        self.batch_first = bool(mha.batch_first)
        self.in_proj = in_proj
        self.q_proj, self.k_proj, self.v_proj = q_proj, k_proj, v_proj
        self.out_proj = out_proj
        self.train(mha.training)

    # ------------------------------------------------------------------ projections
    def _project(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        e = self.embed_dim
        if self.in_proj is None:
            return self.q_proj(query), self.k_proj(key), self.v_proj(value)
        if query is key and key is value:
            qkv = self.in_proj(query)
            return qkv[..., :e], qkv[..., e : 2 * e], qkv[..., 2 * e :]
        # cross-attention with a packed projection: each input through the whole layer
        q = self.in_proj(query)[..., :e]
        kv = self.in_proj(key)
        v = kv[..., 2 * e :] if value is key else self.in_proj(value)[..., 2 * e :]
        return q, kv[..., e : 2 * e], v

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    @staticmethod
    def _merge_masks(
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        batch: int,
        heads: int,
        dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """One additive float mask [B, H or 1, L, S] (or None) from MHA's two masks (bool
        True = not allowed; float = added)."""

        def additive(mask: torch.Tensor) -> torch.Tensor:
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
                    mask, float("-inf")
                )
            return mask.to(dtype)

        merged = None
        if attn_mask is not None:
            m = additive(attn_mask)
            if m.dim() == 2:
                m = m.view(1, 1, *m.shape)
            elif m.dim() == 3:
                m = m.view(batch, heads, *m.shape[1:])
            merged = m
        if key_padding_mask is not None:
            kp = additive(key_padding_mask).view(batch, 1, 1, -1)
            merged = kp if merged is None else merged + kp
        return merged

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``nn.MultiheadAttention.forward``: query [B, L, E] (batch_first) or [L, B, E] or
        unbatched [L, E]; returns (output like query, weights [B, (H,) L, S] or None)."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
            if attn_mask is not None and attn_mask.dim() == 3:
                attn_mask = attn_mask.unsqueeze(0).flatten(0, 1)
        elif not self.batch_first:
            same_kv = key is value
            same_qk = query is key
            query = query.transpose(0, 1)
            key = query if same_qk else key.transpose(0, 1)
            value = key if same_kv else value.transpose(0, 1)
        q, k, v = self._project(query, key, value)
        batch, length = q.shape[0], q.shape[1]
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        mask = self._merge_masks(attn_mask, key_padding_mask, batch, self.num_heads, q.dtype)
        causal = is_causal and mask is None
        drop = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores + mask
            elif causal:
                s = k.shape[-2]
                tri = torch.ones(length, s, dtype=torch.bool, device=q.device).triu(1)
                scores = scores.masked_fill(tri, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            attn = F.dropout(weights, drop, self.training) @ v
            if average_attn_weights:
                weights = weights.mean(dim=1)
        else:
            attn = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=drop, is_causal=causal
            )
        out = attn.transpose(1, 2).reshape(batch, length, self.embed_dim)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}"
        )
