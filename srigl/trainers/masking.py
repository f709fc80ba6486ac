"""Mask bookkeeping of a trainer: initial masks, the masks on the weights' device, zeroing the
masked positions of weights, gradients and optimizer state, the value of grown weights, and the
per-layer figures of :meth:`stats`."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from srigl import distributed
from srigl.masks import random_fan_in_mask, random_n_m_mask, random_unstructured_mask
from srigl.topology import row_count
from srigl.trainers.layers import Layer

#: ``grow_init="small_random"``: the std of grown weights over that of the layer's kept weights
SMALL_RANDOM_SCALE = 1e-2


class MaskBookkeeping:
    """Mixin of :class:`~srigl.trainers.base.SparseTrainer`: owns ``masks`` and ``_off``."""

    layers: dict[str, Layer]
    masks: dict[str, torch.Tensor]
    _off: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    constant_fan_in: bool
    sparse_init: bool
    n_m: tuple[int, int] | None
    _eligible_numel: int
    _step: int
    history: list[dict[str, Any]]

    def _init_masks(self) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                shape = tuple(layer.param.shape)
                if layer.n_m is not None:
                    mask = random_n_m_mask(shape, *layer.n_m, self.generator)
                elif self.constant_fan_in:
                    k = layer.budget // layer.out_features
                    mask = random_fan_in_mask(shape, k, self.generator)
                else:
                    mask = random_unstructured_mask(shape, layer.budget, self.generator)
                self.masks[name] = mask.to(layer.param.device)
                if self.sparse_init:
                    self._sparse_reinit(layer, self.masks[name])
            distributed.broadcast_(self.masks.values())
            distributed.broadcast_(layer.param for layer in self.layers.values())
            self._refresh_off_masks()
            self.apply_masks()

    def _refresh_off_masks(self) -> None:
        self._off = {name: ~mask for name, mask in self.masks.items()}

    def _masks_on(self, name: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(mask, ~mask) of layer ``name`` on ``device``, moved there if the model moved."""
        if self.masks[name].device != device:
            self.masks[name] = self.masks[name].to(device)
            self._off[name] = ~self.masks[name]
        return self.masks[name], self._off[name]

    def _sparse_reinit(self, layer: Layer, mask: torch.Tensor) -> None:
        """Re-initialise every active row from N(0, 2 / k_i), k_i = the row's non-zeros."""
        rows = mask.reshape(layer.out_features, -1)
        k = rows.sum(1).clamp(min=1).to(torch.float64)
        std = torch.sqrt(2.0 / k).cpu().view(-1, 1)
        values = torch.randn(rows.shape, generator=self.generator, dtype=torch.float64) * std
        values = values.to(layer.param.dtype).view_as(layer.param)
        layer.param.copy_(values.to(layer.param.device) * mask)

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the masked positions of every sparse weight, its gradient and optimizer state
        (after mask init, a topology update, a load, and after every optimizer step)."""
        for name, layer in self.layers.items():
            self._zero_outside(layer.param, self._masks_on(name, layer.param.device)[1])

    def _zero_outside(self, param: nn.Parameter, off: torch.Tensor) -> None:
        """Set the weight, its gradient and weight-shaped optimizer state to exactly 0 where
        ``off`` (bool, the weight's shape) is True (masked_fill: a NaN there becomes 0 too)."""
        param.masked_fill_(off, 0)
        if param.grad is not None:
            param.grad.masked_fill_(off, 0)
        for value in self.optimizer.state.get(param, {}).values():
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and value.shape == param.shape
            ):
                value.masked_fill_(off.to(value.device), 0)

    @torch.no_grad()
    def _init_grown(
        self, layer: Layer, grown: torch.Tensor, kept: torch.Tensor, grow_init: str | float
    ) -> None:
        """Give the grown positions (bool, the weight's shape) their ``grow_init`` value.

        ``"zero"`` leaves them at 0 (they were zeroed with the dropped ones); a number sets
        that constant; ``"small_random"`` draws N(0, sigma^2), sigma = SMALL_RANDOM_SCALE times
        the std of the ``kept`` weights, from the trainer's generator (on CPU, so every rank and
        device draws the same values).
        """
        if grow_init == "zero":
            return
        param = layer.param
        if isinstance(grow_init, str):  # "small_random"
            values = param.detach()[kept].to(torch.float64)
            std = float(values.std()) if values.numel() > 1 else 0.0
            noise = torch.randn(param.shape, generator=self.generator, dtype=torch.float64)
            fill = (noise * (SMALL_RANDOM_SCALE * std)).to(param.dtype).to(param.device)
        else:
            fill = torch.full_like(param, float(grow_init))
        param.copy_(torch.where(grown, fill, param))

    @staticmethod
    def _layer_info(mask: torch.Tensor) -> dict[str, Any]:
        rows = mask.reshape(mask.shape[0], -1)
        per_row = row_count(rows)
        active = per_row > 0
        n_active = int(active.sum())
        nnz = int(per_row.sum())
        if n_active and bool((per_row[active] == per_row[active][0]).all()):
            fan_in: int | float = int(per_row[active][0])
        else:
            fan_in = nnz / n_active if n_active else 0
        return {
            "density": nnz / mask.numel(),
            "nnz": nnz,
            "fan_in": fan_in,
            "n_active": n_active,
            "n_ablated": int(rows.shape[0] - n_active),
        }

    def stats(self) -> dict[str, Any]:
        """Step, update count, realised global density and per-layer figures.

        Returns:
            {'step', 'updates', 'global_density', 'layers': {name: {'density', 'nnz',
            'fan_in', 'n_active', 'n_ablated'}}, 'n_m'}. ``fan_in`` is the non-zeros per active
            neuron (an int when it is constant, else their mean as a float; with the ``fan_in``
            option, that option's value for the layer); a neuron with no non-zero is ablated.
            ``n_m`` is [N, M] of the ``n_m`` option, or None. Forced-dense layers are not
            listed but count as dense in ``global_density`` (non-zeros of the mask, over all
            sparse-eligible weights).
        """
        layers = {name: self._layer_info(mask) for name, mask in self.masks.items()}
        masked_numel = sum(m.numel() for m in self.masks.values())
        nnz = sum(info["nnz"] for info in layers.values())
        total = self._eligible_numel
        density = (nnz + total - masked_numel) / total if total else 1.0
        return {
            "step": self._step,
            "updates": len(self.history),
            "global_density": density,
            "layers": layers,
            "n_m": list(self.n_m) if self.n_m is not None else None,
        }
