"""The shared trainer: sparse parameters, masks, gradient hooks, optimizer-state masking,
the update schedule, distributed consistency and state dicts.

A concrete trainer (``dense``, ``static``, ``set``, ``rigl``, ``srigl``) subclasses
:class:`SparseTrainer` and implements only :meth:`SparseTrainer.update_layer`, its drop/grow
rule. Use::

    trainer = srigl.create_trainer("rigl", model, optimizer, sparsity=0.9, total_steps=T)
    for x, y in loader:
        loss = criterion(model(x), y)
        loss.backward()            # the hooks mask the gradients (and average the dense ones)
        optimizer.step()
        trainer.step()             # after optimizer.step(); True when the topology changed
        optimizer.zero_grad()

With fp16 AMP: ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update();
trainer.step()``, and pass the scaler: ``create_trainer(..., grad_scaler=scaler)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from srigl import distributed
from srigl.distributions import layer_densities
from srigl.errors import (
    EmptyLayerError,
    OptimizerMismatchError,
    SparsityConfigError,
    StateDictError,
)
from srigl.masks import (
    SparseParam,
    eligible_parameters,
    forced_dense_names,
    matches_any,
    random_fan_in_mask,
    random_unstructured_mask,
)
from srigl.schedule import UpdateSchedule
from srigl.topology import count, drop_grow_fan_in, drop_grow_unstructured, row_count

STATE_VERSION = 1


@dataclass
class Layer:
    """A sparse layer as the trainer sees it.

    Attributes:
        name: unwrapped parameter name; param: the weight; density: its target density;
        budget: B_l = floor(numel * density); may_ablate: SRigL may switch its neurons off;
        is_classifier: the last eligible layer of the model.
    """

    name: str
    param: nn.Parameter
    density: float
    budget: int
    may_ablate: bool
    is_classifier: bool

    @property
    def out_features(self) -> int:
        """Number of neurons (rows)."""
        return int(self.param.shape[0])

    @property
    def fan_in(self) -> int:
        """Dense fan-in of a neuron: the product of every dim but the first."""
        return self.param[0].numel()


class SparseTrainer:
    """Base class of every trainer. Subclasses set the class attributes and ``update_layer``.

    Args:
        model: any ``nn.Module`` (possibly wrapped in DDP or torch.compile).
        optimizer: the optimizer that owns the model's sparse weights.
        sparsity: global sparsity 1 - d, in (0, 1), over all sparse-eligible weights.
        distribution: 'uniform' | 'er' | 'erk' (see ``srigl.distributions``).
        total_steps: optimizer steps of the whole run (required by dynamic trainers).
        delta_t, alpha, t_end_fraction, grad_accumulation_n: the update schedule.
        gamma_sal: SRigL's ablation threshold fraction (>= 0); ablation: SRigL ablates neurons.
        dense_layers: fnmatch globs of parameter (or module) names kept dense.
        no_ablation: fnmatch globs of parameter (or module) names whose neurons are never
            ablated.
        dense_first_layer, dense_classifier: keep the first / last eligible layer dense.
        ablate_classifier: allow ablating the classifier's neurons (off by default).
        sparse_attention: make ``nn.MultiheadAttention`` projections sparse.
        constant_fan_in, sparse_init: None selects the method's default.
        grad_scaler: the ``torch.amp.GradScaler`` of fp16 training, or None.
        seed: seeds the trainer's own generator (initial masks, SET regrowth, sparse init).
        erk_power: exponent of the ER/ERK raw densities.
    """

    #: whether the trainer has masks at all (False only for ``dense``)
    sparse: ClassVar[bool] = True
    #: whether the topology changes during training
    dynamic: ClassVar[bool] = True
    #: whether updates need the accumulated dense gradient
    needs_dense_grad: ClassVar[bool] = True
    default_constant_fan_in: ClassVar[bool] = False
    default_sparse_init: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        sparsity: float = 0.9,
        distribution: str = "erk",
        total_steps: int | None = None,
        delta_t: int = 100,
        alpha: float = 0.3,
        t_end_fraction: float = 0.75,
        grad_accumulation_n: int = 1,
        gamma_sal: float = 0.3,
        ablation: bool = True,
        dense_layers: Sequence[str] = (),
        no_ablation: Sequence[str] = (),
        dense_first_layer: bool = False,
        dense_classifier: bool = False,
        ablate_classifier: bool = False,
        sparse_attention: bool = True,
        constant_fan_in: bool | None = None,
        sparse_init: bool | None = None,
        grad_scaler: Any = None,
        seed: int = 0,
        erk_power: float = 1.0,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.sparsity = float(sparsity)
        self.distribution = distribution
        self.gamma_sal = float(gamma_sal)
        self.ablation = bool(ablation)
        self.constant_fan_in = (
            self.default_constant_fan_in if constant_fan_in is None else bool(constant_fan_in)
        )
        self.sparse_init = self.default_sparse_init if sparse_init is None else bool(sparse_init)
        self.seed = int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.history: list[dict[str, Any]] = []
        self._step = 0
        self._scaler = grad_scaler
        self._last_scale: float | None = None
        self._acc: dict[str, torch.Tensor] = {}
        self._staged: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self.masks: dict[str, torch.Tensor] = {}
        # the masks in each weight's dtype: multiplying by a float mask is several times faster
        self._float_masks: dict[str, torch.Tensor] = {}
        self.layers: dict[str, Layer] = {}
        self.schedule: UpdateSchedule | None = None

        # attention projections stay eligible with sparse_attention=False: they are forced dense
        # and spend their full size from the budget d*N, like every forced-dense layer (SPEC 1)
        eligible = eligible_parameters(model)
        self._eligible_numel = sum(p.numel for p in eligible)
        if not self.sparse:
            return

        self._validate(gamma_sal, grad_scaler)
        if self.dynamic:
            if total_steps is None:
                raise SparsityConfigError(
                    f"trainer {self.name!r} needs total_steps; allowed: an integer > 0"
                )
            self.schedule = UpdateSchedule(
                total_steps=total_steps,
                delta_t=delta_t,
                alpha=alpha,
                t_end_fraction=t_end_fraction,
                grad_accumulation_n=grad_accumulation_n,
            )
        elif not isinstance(delta_t, int) or delta_t <= 0:
            raise SparsityConfigError(f"delta_t={delta_t!r} is invalid; allowed: an integer > 0")
        if not eligible:
            raise SparsityConfigError(
                "the model has no sparse-eligible weight; allowed: models with Linear, Conv or "
                "MultiheadAttention layers"
            )
        self._build_layers(
            eligible,
            dense_layers=dense_layers,
            no_ablation=no_ablation,
            dense_first_layer=dense_first_layer,
            dense_classifier=dense_classifier,
            ablate_classifier=ablate_classifier,
            erk_power=erk_power,
            sparse_attention=sparse_attention,
        )
        self._check_optimizer()
        self._init_masks()
        if grad_scaler is not None and grad_scaler.is_enabled():
            self._last_scale = float(grad_scaler.get_scale())
        for name, layer in self.layers.items():
            self._handles.append(layer.param.register_hook(self._make_hook(name)))

    # ------------------------------------------------------------------ set-up

    @property
    def name(self) -> str:
        """The registry name of this trainer."""
        return getattr(type(self), "registry_name", type(self).__name__)

    def _validate(self, gamma_sal: float, grad_scaler: Any) -> None:
        if not 0.0 < self.sparsity < 1.0:
            raise SparsityConfigError(
                f"sparsity={self.sparsity!r} is invalid; allowed: 0 < sparsity < 1"
            )
        if gamma_sal < 0:
            raise SparsityConfigError(f"gamma_sal={gamma_sal!r} is invalid; allowed: >= 0")
        if grad_scaler is not None:
            for attr in ("get_scale", "is_enabled"):
                if not hasattr(grad_scaler, attr):
                    raise SparsityConfigError(
                        f"grad_scaler={grad_scaler!r} has no {attr}(); allowed: a "
                        "torch.amp.GradScaler or None"
                    )

    def _build_layers(
        self,
        eligible: list[SparseParam],
        *,
        dense_layers: Iterable[str],
        no_ablation: Iterable[str],
        dense_first_layer: bool,
        dense_classifier: bool,
        ablate_classifier: bool,
        erk_power: float,
        sparse_attention: bool = True,
    ) -> None:
        forced = forced_dense_names(eligible, dense_layers, dense_first_layer, dense_classifier)
        if not sparse_attention:
            forced |= {p.name for p in eligible if p.in_attention}
        shapes = {p.name: p.shape for p in eligible}
        kwargs = {} if self.distribution == "uniform" else {"power": erk_power}
        densities = layer_densities(
            self.distribution, shapes, 1.0 - self.sparsity, dense=forced, **kwargs
        )
        classifier = eligible[-1].name
        no_ablation = list(no_ablation)
        for p in eligible:
            density = densities[p.name]
            if density >= 1.0:
                continue
            # round first so that float noise (1 - 0.9 = 0.0999...98) does not lose a weight
            budget = math.floor(round(p.numel * density, 6))
            # like dense_layers, a glob may name the parameter or its module ("head")
            protected = matches_any(p.name, no_ablation) or matches_any(p.module_name, no_ablation)
            may_ablate = not protected and (p.name != classifier or ablate_classifier)
            layer = Layer(p.name, p.param, density, budget, may_ablate, p.name == classifier)
            per_neuron = budget // layer.out_features if self.constant_fan_in else budget
            if per_neuron == 0:
                what = "fan-in k = floor(B_l / out)" if self.constant_fan_in else "budget B_l"
                raise EmptyLayerError(
                    f"layer {p.name!r} of shape {tuple(p.shape)} at density {density:.4g} gets "
                    f"{what} = 0 (B_l = {budget}); allowed: at least 1 weight per neuron. "
                    f"Keep it dense with dense_layers=[{p.name!r}], lower the sparsity, or use "
                    "another distribution"
                )
            self.layers[p.name] = layer

    def _check_optimizer(self) -> None:
        owned = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        missing = [name for name, layer in self.layers.items() if id(layer.param) not in owned]
        if missing:
            raise OptimizerMismatchError(
                f"the optimizer does not own the sparse parameters {missing}; allowed: an "
                "optimizer built over the model's parameters (e.g. SGD(model.parameters()))"
            )

    def _init_masks(self) -> None:
        with torch.no_grad():
            for name, layer in self.layers.items():
                shape = tuple(layer.param.shape)
                if self.constant_fan_in:
                    k = layer.budget // layer.out_features
                    mask = random_fan_in_mask(shape, k, self.generator)
                else:
                    mask = random_unstructured_mask(shape, layer.budget, self.generator)
                self.masks[name] = mask.to(layer.param.device)
                if self.sparse_init:
                    self._sparse_reinit(layer, self.masks[name])
            distributed.broadcast_(self.masks.values())
            distributed.broadcast_(layer.param for layer in self.layers.values())
            self._refresh_float_masks()
            self.apply_masks()

    def _refresh_float_masks(self) -> None:
        self._float_masks = {
            name: mask.to(self.layers[name].param.dtype) for name, mask in self.masks.items()
        }

    def _sparse_reinit(self, layer: Layer, mask: torch.Tensor) -> None:
        """Re-initialise every active row from N(0, 2 / k_i), k_i = the row's non-zeros."""
        rows = mask.reshape(layer.out_features, -1)
        k = rows.sum(1).clamp(min=1).to(torch.float64)
        std = torch.sqrt(2.0 / k).cpu().view(-1, 1)
        values = torch.randn(rows.shape, generator=self.generator, dtype=torch.float64) * std
        values = values.to(layer.param.dtype).view_as(layer.param)
        layer.param.copy_(values.to(layer.param.device) * mask)

    def _make_hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            if self._accumulating():
                self._accumulate(name, grad)
            return grad * self._float_masks[name]

        return hook

    # ------------------------------------------------------------------ per step

    def _accumulating(self) -> bool:
        """Whether the gradient now being computed (for step ``self.step + 1``) is averaged."""
        return (
            self.needs_dense_grad
            and self.schedule is not None
            and self.schedule.accumulates(self._step + 1)
        )

    def _scaler_active(self) -> bool:
        return self._scaler is not None and self._scaler.is_enabled()

    def _accumulate(self, name: str, grad: torch.Tensor) -> None:
        """Add grad / n (unscaled under AMP) into the accumulator, or its staging area."""
        assert self.schedule is not None
        g = grad.detach()
        dtype = torch.promote_types(g.dtype, torch.float32)
        g = g.to(dtype)
        if self._scaler_active():
            scale = getattr(self._scaler, "_scale", None)
            g = g / (
                scale.to(dtype) if isinstance(scale, torch.Tensor) else self._scaler.get_scale()
            )
            target = self._staged
        else:
            target = self._acc
        g = g / self.schedule.grad_accumulation_n
        if name in target:
            target[name].add_(g)
        else:
            target[name] = g

    def _scaler_skipped_step(self) -> bool:
        """Whether the scaler skipped the optimizer step just taken (its scale backed off)."""
        if not self._scaler_active():
            return False
        current = float(self._scaler.get_scale())
        previous = self._last_scale
        self._last_scale = current
        return previous is not None and current < previous

    @property
    def step_count(self) -> int:
        """Completed optimizer steps seen by the trainer (skipped AMP steps excluded)."""
        return self._step

    def is_update_step(self, step: int | None = None) -> bool:
        """Whether a topology update happens at ``step`` (default: the next ``step()``)."""
        step = self._step + 1 if step is None else step
        return self.dynamic and self.schedule is not None and self.schedule.is_update_step(step)

    def step(self) -> bool:
        """Record one completed optimizer step; update the topology when it is due.

        Call it after ``optimizer.step()`` (and after ``scaler.update()`` under AMP). A step the
        GradScaler skipped (inf/NaN gradients) changes nothing: no step is counted and its
        gradients never reach the dense-gradient accumulator.

        Returns:
            True when a topology update happened at this step.
        """
        if self._scaler_skipped_step():
            self._staged.clear()
            return False
        for name, g in self._staged.items():
            if name in self._acc:
                self._acc[name].add_(g)
            else:
                self._acc[name] = g
        self._staged = {}
        self._step += 1
        if not self.sparse:
            return False
        updated = self.is_update_step(self._step)
        if updated:
            self._topology_update()
        self.apply_masks()
        return updated

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the masked positions of every sparse weight, its gradient and optimizer state."""
        for name, layer in self.layers.items():
            self._zero_outside(layer.param, self._float_masks[name])

    def _zero_outside(self, param: nn.Parameter, keep: torch.Tensor) -> None:
        """Multiply the weight, its gradient and weight-shaped optimizer state by ``keep``."""
        keep = keep.to(param.dtype)
        param.mul_(keep)
        if param.grad is not None:
            param.grad.mul_(keep)
        for value in self.optimizer.state.get(param, {}).values():
            if (
                isinstance(value, torch.Tensor)
                and value.is_floating_point()
                and value.shape == param.shape
            ):
                value.mul_(keep)

    # ------------------------------------------------------------------ topology update

    def dense_gradients(self) -> dict[str, torch.Tensor]:
        """The accumulated dense gradients, averaged over ranks: {name: float, weight-shaped}.

        A layer that received no gradient gets zeros, so every rank reduces the same tensors.
        """
        for name, layer in self.layers.items():
            if name not in self._acc:
                dtype = torch.promote_types(layer.param.dtype, torch.float32)
                self._acc[name] = torch.zeros_like(layer.param, dtype=dtype)
        distributed.all_reduce_mean_(self._acc[name] for name in self.layers)
        return self._acc

    @torch.no_grad()
    def _topology_update(self) -> None:
        assert self.schedule is not None
        fraction = self.schedule.drop_fraction(self._step)
        grads = self.dense_gradients() if self.needs_dense_grad else {}
        entry: dict[str, Any] = {
            "step": self._step,
            "drop_fraction": fraction,
            "n_ablated": 0,
            "layers": {},
        }
        for name, layer in self.layers.items():
            mask = self.masks[name]
            rows = layer.out_features
            weight = layer.param.detach().reshape(rows, -1)
            grad = grads.get(name)
            if grad is None:
                grad = torch.zeros_like(weight)
            kept, new = self.update_layer(
                layer, weight, mask.reshape(rows, -1), grad.reshape(rows, -1), fraction
            )
            kept = kept.reshape(mask.shape)
            self._zero_outside(layer.param, kept)
            mask.copy_(new.reshape(mask.shape))
            self._float_masks[name] = mask.to(layer.param.dtype)
            info = self._layer_info(mask)
            entry["layers"][name] = {
                "n_ablated": info["n_ablated"],
                "fan_in": info["fan_in"],
                "nnz": info["nnz"],
            }
            entry["n_ablated"] += info["n_ablated"]
        self._acc = {}
        self.history.append(entry)

    def update_layer(
        self,
        layer: Layer,
        weight: torch.Tensor,
        mask: torch.Tensor,
        grad: torch.Tensor,
        drop_fraction: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The trainer's drop/grow rule for one layer.

        Args:
            layer: the layer; weight: float [out, F] (read only); mask: bool [out, F];
            grad: float [out, F], the averaged dense gradient (zeros if the trainer needs none);
            drop_fraction: f(t) of this update.

        Returns:
            (kept, new_mask), bool [out, F]: ``kept`` are the surviving connections (their
            weights and optimizer state stay), ``new_mask & ~kept`` the grown ones (start at 0).
        """
        raise NotImplementedError

    def drop_and_grow(
        self,
        layer: Layer,
        weight: torch.Tensor,
        mask: torch.Tensor,
        grow_score: torch.Tensor,
        drop_fraction: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Magnitude drop of floor(f * nnz) weights, regrowth ranked by |grow_score|.

        Unstructured (nnz constant over the layer), or with ``constant_fan_in`` each active
        neuron regrows back to the layer's fan-in floor(B / n_active) (no ablation).

        Args:
            weight, grow_score: float [out, F]; mask: bool [out, F]; drop_fraction: f(t).

        Returns:
            (kept, new_mask), bool [out, F], as :meth:`update_layer`.
        """
        n_on = count(mask)
        n_drop = math.floor(drop_fraction * n_on)
        if not self.constant_fan_in:
            return drop_grow_unstructured(weight, mask, grow_score, n_drop)
        active = mask.any(1)
        k = layer.budget // count(active)
        return drop_grow_fan_in(weight, mask, grow_score, active, n_on - n_drop, k)

    # ------------------------------------------------------------------ reporting

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
            'fan_in', 'n_active', 'n_ablated'}}}. ``fan_in`` is the non-zeros per active
            neuron (an int when it is constant, else their mean as a float); a neuron with no
            non-zero is ablated. Forced-dense layers are not listed but count as dense in
            ``global_density`` (non-zeros of the mask, over all sparse-eligible weights).
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
        }

    # ------------------------------------------------------------------ persistence

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit for bit; loadable with ``weights_only=True``.

        Returns:
            {'version', 'trainer', 'step', 'masks': {name: bool tensor}, 'accumulators':
            {name: float tensor}, 'history': list, 'generator': uint8 tensor, 'last_scale'}.
        """
        return {
            "version": STATE_VERSION,
            "trainer": self.name,
            "step": self._step,
            "masks": {n: m.detach().clone() for n, m in self.masks.items()},
            "accumulators": {n: a.detach().clone() for n, a in self._acc.items()},
            "history": [dict(h) for h in self.history],
            "generator": self.generator.get_state(),
            "last_scale": self._last_scale,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; masks are copied into the live mask tensors.

        Raises:
            StateDictError: another trainer, or masks whose names or shapes differ.
        """
        if state.get("trainer") != self.name:
            raise StateDictError(
                f"state dict of trainer {state.get('trainer')!r}; allowed: {self.name!r}"
            )
        masks = state.get("masks", {})
        if set(masks) != set(self.masks):
            raise StateDictError(
                f"state dict masks {sorted(masks)} do not match this model's sparse layers "
                f"{sorted(self.masks)}"
            )
        for name, mask in masks.items():
            if tuple(mask.shape) != tuple(self.masks[name].shape):
                raise StateDictError(
                    f"mask {name!r} has shape {tuple(mask.shape)}; allowed: "
                    f"{tuple(self.masks[name].shape)}"
                )
            self.masks[name].copy_(mask.to(torch.bool))
        self._refresh_float_masks()
        self._step = int(state["step"])
        self._acc = {
            n: a.to(self.layers[n].param.device).clone()
            for n, a in state.get("accumulators", {}).items()
        }
        self._staged = {}
        self.history = [dict(h) for h in state.get("history", [])]
        # a CPU generator takes only a CPU ByteTensor; a checkpoint loaded with
        # map_location="cuda" carries the state on the GPU
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())
        self._last_scale = state.get("last_scale")
        if self.sparse:
            self.apply_masks()

    def remove(self) -> None:
        """Detach the gradient hooks from the model (masks stay as they are)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
