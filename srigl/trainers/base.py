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

With fp16 AMP pass the scaler, ``create_trainer(..., grad_scaler=scaler)``, and call
``scaler.scale(loss).backward(); scaler.step(opt); trainer.step(); scaler.update()``: between
``scaler.step`` and ``scaler.update`` the trainer reads the scaler's record of inf/NaN gradients
for the step. ``trainer.step()`` after ``scaler.update()`` works too (a skip is then inferred from
the gradients the trainer saw and the scale's backoff); after a manual ``update(new_scale)`` it
cannot be inferred and raises :class:`~srigl.errors.GradScalerOrderError`.

Without a scaler a NaN/inf gradient raises :class:`~srigl.errors.NonFiniteGradientError` from
``backward()`` (naming the layer and step), before the optimizer sees it. One trainer per
model: a second raises :class:`~srigl.errors.TrainerConflictError` until the first is closed
(``trainer.close()``, or ``with srigl.create_trainer(...) as trainer:``).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from srigl import distributed
from srigl.distributions import layer_densities
from srigl.errors import (
    EmptyLayerError,
    GradScalerOrderError,
    NonFiniteGradientError,
    OptimizerMismatchError,
    SparsityConfigError,
    StateDictError,
    TrainerConflictError,
)
from srigl.masks import (
    SparseParam,
    check_globs,
    eligible_parameters,
    forced_dense_names,
    layer_budget,
    matches_any,
    random_fan_in_mask,
    random_unstructured_mask,
)
from srigl.schedule import UpdateSchedule
from srigl.topology import count, drop_grow_fan_in, drop_grow_unstructured, row_count
from srigl.trainers.options import check_trainer_arguments

#: what a trainer's rule returns for one layer: (kept, new_mask), both bool [out, F]
Kept = tuple[Tensor, Tensor]

STATE_VERSION = 1

#: id(parameter) -> the live trainer whose gradient hooks it carries (one trainer per weight)
_OWNERS: dict[int, weakref.ref] = {}


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
        attention_layers: fnmatch globs of module (or parameter) names that are attention
            blocks, besides those known by type (``nn.MultiheadAttention``, timm's and Hugging
            Face's ``*Attention`` classes; see ``srigl.masks``).
            Every glob of these three options must match an eligible weight or its module
            (else a ValueError naming the pattern and the closest names).
        dense_first_layer, dense_classifier: keep the first / last eligible layer dense.
        ablate_classifier: allow ablating the classifier's neurons (off by default).
        sparse_attention: make attention projections sparse; False keeps them dense (forced
            dense inside N: they spend their full size from the budget d*N).
        constant_fan_in, sparse_init: None selects the method's default.
        grad_scaler: the ``torch.amp.GradScaler`` of fp16 training, or None.
        seed: seeds the trainer's own generator (initial masks, SET regrowth, sparse init);
            under torch.distributed rank 0's seed is used on every rank.
        erk_power: exponent of the ER/ERK raw densities.
        check_finite: without a GradScaler, raise NonFiniteGradientError from the gradient
            hook when a sparse weight's gradient holds NaN/inf (costs one reduction and one
            device sync per layer and backward; False skips the check).

    Every argument is checked up front (type and range, naming the argument); a dynamic
    trainer whose schedule leaves no topology update (delta_t >= t_end) warns.
    The masks follow the weights: a model moved with ``.to(dtype/device)`` after the trainer
    was built keeps training (masks move lazily to the weights' device; they are bool, so the
    dtype does not matter).
    """

    #: whether the trainer has masks at all (False only for ``dense``)
    sparse: ClassVar[bool] = True
    #: whether the topology changes during training
    dynamic: ClassVar[bool] = True
    #: whether updates need the accumulated dense gradient
    needs_dense_grad: ClassVar[bool] = True
    #: whether the trainer switches neurons off (SRigL's ablation)
    ablates: ClassVar[bool] = False
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
        attention_layers: Sequence[str] = (),
        dense_first_layer: bool = False,
        dense_classifier: bool = False,
        ablate_classifier: bool = False,
        sparse_attention: bool = True,
        constant_fan_in: bool | None = None,
        sparse_init: bool | None = None,
        grad_scaler: Any = None,
        seed: int = 0,
        erk_power: float = 1.0,
        check_finite: bool = True,
    ) -> None:
        check_trainer_arguments(
            model=model,
            optimizer=optimizer,
            sparsity=sparsity,
            distribution=distribution,
            total_steps=total_steps,
            delta_t=delta_t,
            alpha=alpha,
            t_end_fraction=t_end_fraction,
            grad_accumulation_n=grad_accumulation_n,
            gamma_sal=gamma_sal,
            ablation=ablation,
            dense_layers=dense_layers,
            no_ablation=no_ablation,
            attention_layers=attention_layers,
            dense_first_layer=dense_first_layer,
            dense_classifier=dense_classifier,
            ablate_classifier=ablate_classifier,
            sparse_attention=sparse_attention,
            constant_fan_in=constant_fan_in,
            sparse_init=sparse_init,
            grad_scaler=grad_scaler,
            seed=seed,
            erk_power=erk_power,
            check_finite=check_finite,
            sparse=self.sparse,
        )
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
        # every rank draws the same random choices (masks, SET regrowth): rank 0's seed
        self.seed = distributed.broadcast_int(int(seed)) if self.sparse else int(seed)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.check_finite = check_finite
        self.history: list[dict[str, Any]] = []
        self._step = 0
        self._scaler = grad_scaler
        self._last_scale: float | None = None
        self._acc: dict[str, torch.Tensor] = {}
        self._acc_steps = 0  # committed optimizer steps summed into self._acc
        self._staged: dict[str, torch.Tensor] = {}
        self._handles: list[Any] = []
        self._closed = False
        self.masks: dict[str, torch.Tensor] = {}
        # ~mask on the weight's device: masked positions are set to exactly 0 (masked_fill), so
        # a NaN/inf there never survives (NaN * 0 would be NaN)
        self._off: dict[str, torch.Tensor] = {}
        self.layers: dict[str, Layer] = {}
        self.schedule: UpdateSchedule | None = None

        # attention projections stay eligible with sparse_attention=False: they are forced dense
        # and spend their full size from the budget d*N, like every forced-dense layer (SPEC 1)
        eligible = eligible_parameters(model, attention_layers=attention_layers)
        self._eligible_numel = sum(p.numel for p in eligible)
        if not self.sparse:
            return

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
            if self.schedule.next_update_step(1) is None:  # O(1): no list of every step
                warnings.warn(
                    f"trainer {self.name!r}: no topology update can happen: delta_t={delta_t} "
                    f">= t_end={self.schedule.t_end} (= floor(t_end_fraction={t_end_fraction} * "
                    f"total_steps={total_steps})); the masks stay as initialised. Lower delta_t "
                    "or raise total_steps",
                    UserWarning,
                    stacklevel=3,
                )
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
        self._claim_parameters()
        try:
            self._init_masks()
        except BaseException:
            self._release_parameters()
            raise
        if grad_scaler is not None and grad_scaler.is_enabled():
            self._last_scale = float(grad_scaler.get_scale())
        for name, layer in self.layers.items():
            self._handles.append(layer.param.register_hook(self._make_hook(name)))

    # ------------------------------------------------------------------ set-up

    @property
    def name(self) -> str:
        """The registry name of this trainer."""
        return getattr(type(self), "registry_name", type(self).__name__)

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
        forced = forced_dense_names(
            eligible, dense_layers, dense_first_layer, dense_classifier, sparse_attention
        )
        shapes = {p.name: p.shape for p in eligible}
        kwargs = {} if self.distribution == "uniform" else {"power": erk_power}
        densities = layer_densities(
            self.distribution, shapes, 1.0 - self.sparsity, dense=forced, **kwargs
        )
        classifier = eligible[-1].name
        no_ablation = list(no_ablation)
        check_globs(
            "no_ablation",
            no_ablation,
            [p.name for p in eligible] + [p.module_name for p in eligible],
        )
        for p in eligible:
            density = densities[p.name]
            if density >= 1.0:
                continue
            budget = layer_budget(p.numel, density)
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

    def _claim_parameters(self) -> None:
        """Refuse weights that carry another live trainer's hooks, then claim them."""
        taken, other = [], None
        for name, layer in self.layers.items():
            ref = _OWNERS.get(id(layer.param))
            owner = ref() if ref is not None else None
            if owner is not None and owner is not self and owner.owns(layer.param):
                taken.append(name)
                other = owner
        if taken:
            raise TrainerConflictError(
                f"the parameters {taken} already carry the gradient hooks of another "
                f"{other.name!r} trainer built on this model; call close() on it first (or "
                "build trainers with `with srigl.create_trainer(...) as trainer:`), or build "
                "the model again"
            )
        for layer in self.layers.values():
            _OWNERS[id(layer.param)] = weakref.ref(self)

    def _release_parameters(self) -> None:
        for layer in self.layers.values():
            ref = _OWNERS.get(id(layer.param))
            if ref is not None and ref() in (self, None):
                del _OWNERS[id(layer.param)]

    def owns(self, param: torch.Tensor) -> bool:
        """Whether ``param`` is one of this (open) trainer's sparse weights, hooks attached."""
        return not self._closed and any(layer.param is param for layer in self.layers.values())

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

    def _make_hook(self, name: str):
        def hook(grad: torch.Tensor) -> torch.Tensor:
            scaled = self._scaler_active()
            if self.check_finite and not scaled:
                self._check_finite(name, grad)
            if self._accumulating():
                self._accumulate(name, grad)
            off = self._masks_on(name, grad.device)[1]
            if scaled:
                # keep a NaN/inf at a masked position visible to the scaler (grad * 0 is NaN
                # there), so it skips the step as it would for an active one: the trainer
                # needs the dense gradient finite too; every finite entry becomes 0
                return torch.where(off, grad * 0, grad)
            return grad.masked_fill(off, 0)

        return hook

    def _check_finite(self, name: str, grad: torch.Tensor) -> None:
        """Raise NonFiniteGradientError if ``grad`` holds NaN/inf (one reduction, one sync)."""
        total = grad.sum(dtype=torch.promote_types(grad.dtype, torch.float32))
        if bool(torch.isfinite(total)):
            return
        bad = int((~torch.isfinite(grad)).sum())
        raise NonFiniteGradientError(
            f"layer {name!r}: the gradient of step {self._step + 1} holds {bad} NaN/inf values "
            f"(of {grad.numel()}); stopped before the optimizer or the masks saw it. Check the "
            "inputs and the loss, lower the learning rate, or train fp16 with a GradScaler "
            "(grad_scaler=...), which skips such steps; check_finite=False turns this off"
        )

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
            if isinstance(scale, torch.Tensor):
                g = g / scale.to(device=g.device, dtype=dtype)
            else:
                g = g / self._scaler.get_scale()
            target = self._staged
        else:
            target = self._acc
        # divided per gradient (so a full window is bitwise what it always was); a window
        # that committed fewer steps is rescaled at the update (see _window_average)
        _add_into(target, name, g / self.schedule.grad_accumulation_n)

    def _scaler_skipped_step(self) -> bool:
        """Whether the GradScaler skipped the optimizer step just taken.

        Between ``scaler.step(optimizer)`` and ``scaler.update()`` the scaler's own record of
        inf/NaN gradients for the step decides. After ``scaler.update()`` (the record is
        cleared) the step was skipped if a gradient the trainer staged was not finite or the
        scale backed off by the scaler's backoff factor; any other change of the scale (a
        manual ``update(new_scale)``) cannot be read and raises GradScalerOrderError.
        """
        if not self._scaler_active():
            return False
        scaler = self._scaler
        current = float(scaler.get_scale())
        previous = self._last_scale
        self._last_scale = current
        found = self._scaler_found_inf()
        if found is not None:
            return found
        if any(not bool(torch.isfinite(g.sum())) for g in self._staged.values()):
            return True
        if previous is None or current == previous:
            return False
        if math.isclose(current, previous * scaler.get_backoff_factor(), rel_tol=1e-6):
            return True
        if math.isclose(current, previous * scaler.get_growth_factor(), rel_tol=1e-6):
            return False
        raise GradScalerOrderError(
            f"the GradScaler's scale changed from {previous:g} to {current:g}, by neither its "
            "backoff nor its growth factor (a manual scaler.update(new_scale)?), so the trainer "
            "cannot tell whether the step was skipped; call trainer.step() after "
            "scaler.step(optimizer) and before scaler.update(...)"
        )

    def _scaler_found_inf(self) -> bool | None:
        """The scaler's inf/NaN record for our optimizer's current step, or None when there is
        none (``scaler.update()`` already cleared it, or ``scaler.step`` was not called)."""
        states = getattr(self._scaler, "_per_optimizer_states", None)
        state = states.get(id(self.optimizer)) if isinstance(states, dict) else None
        found = state.get("found_inf_per_device") if isinstance(state, dict) else None
        if not found:
            return None
        return any(float(v.sum()) > 0 for v in found.values())

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
            _add_into(self._acc, name, g)
        self._staged = {}
        self._step += 1
        if self.schedule is not None and self.needs_dense_grad:
            self._acc_steps += int(self.schedule.accumulates(self._step))
        if not self.sparse:
            return False
        updated = self.is_update_step(self._step)
        if updated:
            self._topology_update()
        # every step, not only after an update: a gradient changed after the trainer's hook (a
        # later hook, DP noise) or an optimizer's own terms must not leave anything at a masked
        # position of the weights, gradients or optimizer state
        self.apply_masks()
        return updated

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

    # ------------------------------------------------------------------ topology update

    def dense_gradients(self) -> dict[str, torch.Tensor]:
        """The accumulated dense gradients, averaged over ranks: {name: float, weight-shaped}.

        A layer that received no gradient gets zeros, so every rank reduces the same tensors.
        """
        for name, layer in self.layers.items():
            if name not in self._acc:
                dtype = torch.promote_types(layer.param.dtype, torch.float32)
                self._acc[name] = torch.zeros_like(layer.param, dtype=dtype)
            elif self._acc[name].device != layer.param.device:
                self._acc[name] = self._acc[name].to(layer.param.device)
        grads = self._window_average()
        distributed.all_reduce_mean_(grads[name] for name in self.layers)
        return grads

    def _window_average(self) -> dict[str, torch.Tensor]:
        """The accumulators as the mean over the steps actually committed in the window.

        Each gradient was added as grad / grad_accumulation_n, so a full window is the sum as
        it is (the same tensors, bit for bit); a window that committed fewer steps so far (read
        mid-window) is rescaled, in copies, to divide by that number instead.
        """
        n = self.schedule.grad_accumulation_n if self.schedule is not None else 1
        if 0 < self._acc_steps < n:
            return {name: acc * (n / self._acc_steps) for name, acc in self._acc.items()}
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
            mask, _ = self._masks_on(name, layer.param.device)
            rows = layer.out_features
            weight = layer.param.detach().reshape(rows, -1)
            grad = grads.get(name)
            if grad is None:
                grad = torch.zeros_like(weight)
            kept, new = self.update_layer(
                layer, weight, mask.reshape(rows, -1), grad.reshape(rows, -1), fraction
            )
            kept = kept.reshape(mask.shape)
            self._zero_outside(layer.param, ~kept)
            mask.copy_(new.reshape(mask.shape))
            self._off[name] = ~mask
            info = self._layer_info(mask)
            entry["layers"][name] = {
                "n_ablated": info["n_ablated"],
                "fan_in": info["fan_in"],
                "nnz": info["nnz"],
            }
            entry["n_ablated"] += info["n_ablated"]
        self._acc = {}
        self._acc_steps = 0
        self.history.append(entry)

    def update_layer(self, layer: Layer, w: Tensor, mask: Tensor, grad: Tensor, f: float) -> Kept:
        """The trainer's drop/grow rule for one layer.

        Args:
            layer: the layer; w: its weight, float [out, F] (read only); mask: bool [out, F];
            grad: float [out, F], the averaged dense gradient (zeros if the trainer needs none);
            f: the drop fraction f(t) of this update.

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
            {name: float tensor}, 'accumulated_steps': int, 'history': list, 'generator':
            uint8 tensor, 'last_scale'}.
        """
        return {
            "version": STATE_VERSION,
            "trainer": self.name,
            "step": self._step,
            "masks": {n: m.detach().clone() for n, m in self.masks.items()},
            "accumulators": {n: a.detach().clone() for n, a in self._acc.items()},
            "accumulated_steps": self._acc_steps,
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
            if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(
                self.masks[name].shape
            ):
                shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask)
                raise StateDictError(
                    f"mask {name!r} has shape {shape}; allowed: {tuple(self.masks[name].shape)}"
                )
            self._check_loaded_mask(name, mask)
        for name, mask in masks.items():
            self.masks[name].copy_(mask.to(torch.bool))
        self._refresh_off_masks()
        self._step = int(state["step"])
        self._acc = {
            n: a.to(self.layers[n].param.device).clone()
            for n, a in state.get("accumulators", {}).items()
        }
        # states saved before the count was kept: a full window so far
        self._acc_steps = int(state.get("accumulated_steps", self._steps_in_window()))
        self._staged = {}
        self.history = [dict(h) for h in state.get("history", [])]
        # a CPU generator takes only a CPU ByteTensor; a checkpoint loaded with
        # map_location="cuda" carries the state on the GPU
        self.generator.set_state(torch.as_tensor(state["generator"]).cpu())
        self._last_scale = state.get("last_scale")
        if self.sparse:
            self.apply_masks()

    def _check_loaded_mask(self, name: str, mask: torch.Tensor) -> None:
        """Refuse a loaded mask that breaks this trainer's invariants (SPEC.md sections 1-2):
        bool (or 0/1) values; constant fan-in k = floor(B / n_active) in every active neuron
        and B - n_active < nnz <= B (no ablated neuron where ablation is off); or, unstructured,
        exactly B non-zeros."""
        layer = self.layers[name]
        where = f"mask {name!r} (shape {tuple(mask.shape)}, budget B = {layer.budget})"
        if mask.dtype != torch.bool and bool(((mask != 0) & (mask != 1)).any()):
            raise StateDictError(f"{where} holds values other than 0 and 1; allowed: bool")
        rows = mask.reshape(layer.out_features, -1).to(torch.bool).sum(1)
        nnz = int(rows.sum())
        if not self.constant_fan_in:
            if nnz != layer.budget:
                raise StateDictError(f"{where} has {nnz} non-zeros; allowed: exactly B")
            return
        active = rows > 0
        n_active = int(active.sum())
        if n_active == 0:
            raise StateDictError(f"{where} has no active neuron; allowed: at least one")
        k = layer.budget // n_active
        lo, hi = int(rows[active].min()), int(rows[active].max())
        if lo != k or hi != k:
            raise StateDictError(
                f"{where}: its {n_active} active neurons keep {lo}..{hi} non-zeros; allowed: "
                f"exactly k = floor(B / n_active) = {k} each (constant fan-in)"
            )
        can_ablate = self.ablation and layer.may_ablate and type(self).ablates
        if n_active < layer.out_features and not can_ablate:
            raise StateDictError(
                f"{where} has {layer.out_features - n_active} ablated neurons; allowed: none "
                "(this trainer does not ablate this layer)"
            )

    def _steps_in_window(self) -> int:
        """Steps up to now that belong to the current accumulation window."""
        if self.schedule is None or not self.needs_dense_grad:
            return 0
        n = self.schedule.grad_accumulation_n
        return sum(
            self.schedule.accumulates(s) for s in range(max(1, self._step - n + 1), self._step + 1)
        )

    def close(self) -> None:
        """Detach the gradient hooks from the model (masks and weights stay as they are), so a
        new trainer may be built on it. Idempotent; also what leaving a ``with`` block does."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._release_parameters()
        self._closed = True

    def remove(self) -> None:
        """Same as :meth:`close` (kept for existing callers)."""
        self.close()

    def __enter__(self) -> SparseTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _add_into(target: dict[str, torch.Tensor], name: str, g: torch.Tensor) -> None:
    """target[name] += g, creating it, and following g's device and (wider) dtype."""
    acc = target.get(name)
    if acc is None:
        target[name] = g
        return
    if acc.device != g.device or acc.dtype != torch.promote_types(acc.dtype, g.dtype):
        acc = acc.to(device=g.device, dtype=torch.promote_types(acc.dtype, g.dtype))
        target[name] = acc
    acc.add_(g)
