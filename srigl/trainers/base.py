"""The shared trainer: sparse parameters, masks, gradient hooks, optimizer-state masking,
the update schedule, distributed consistency and state dicts.

A concrete trainer (``dense``, ``static``, ``set``, ``rigl``, ``srigl``) subclasses
:class:`SparseTrainer` and implements only :meth:`SparseTrainer.update_layer`, its drop/grow
rule, and states in ``defaults`` the options whose default differs from
:class:`~srigl.trainers.config.SparseConfig`'s. This module holds the set-up and the schedule's
use (``step``, the topology update); the jobs around it have a file each: ``config`` (the
options), ``layers`` (which weights are sparse, their budgets), ``masking`` (masks and the
zeroing of masked positions), ``gradients`` (hooks, the dense-gradient accumulator, AMP),
``state`` (state dicts), ``ownership`` (one trainer per weight), ``srigl.distributed``
(the broadcasts). Use::

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
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from srigl import distributed
from srigl.errors import SparsityConfigError
from srigl.masks import eligible_parameters
from srigl.schedule import UpdateSchedule
from srigl.topology import count, drop_grow_fan_in, drop_grow_n_m, drop_grow_unstructured
from srigl.trainers.config import SparseConfig, check_sparsity_range
from srigl.trainers.gradients import GradientTracking
from srigl.trainers.layers import Kept, Layer, build_layers
from srigl.trainers.masking import MaskBookkeeping
from srigl.trainers.ownership import ParameterOwnership
from srigl.trainers.state import STATE_VERSION, TrainerState

__all__ = ["STATE_VERSION", "Kept", "Layer", "SparseConfig", "SparseTrainer"]


def constrained_drop_grow(
    layer: Layer,
    weight: torch.Tensor,
    mask: torch.Tensor,
    grow_score: torch.Tensor,
    active: torch.Tensor,
    n_keep: int,
    kept: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Drop and grow of a constant fan-in layer (every trainer with ``constant_fan_in``, SRigL):
    N:M groups where the layer has ``n_m``, else fan-in ``layer.fan_in_for(active neurons)``,
    one more on ``layer.extra_for(active neurons)`` of them (the layer holds its budget).

    Args:
        weight, grow_score: float [out, F]; mask: bool [out, F]; active: bool [out]; n_keep:
        weights kept before growing; kept: the layer-wide top-n_keep selection if known.

    Returns:
        (kept, new_mask), bool [out, F].
    """
    if layer.n_m is not None:
        n, m = layer.n_m
        return drop_grow_n_m(weight, mask, grow_score, active, n_keep, n, m, kept=kept)
    n_active = count(active)
    k = layer.fan_in_for(n_active)
    extra = layer.extra_for(n_active)
    return drop_grow_fan_in(weight, mask, grow_score, active, n_keep, k, kept=kept, extra=extra)


class SparseTrainer(MaskBookkeeping, GradientTracking, TrainerState, ParameterOwnership):
    """Base class of every trainer. Subclasses set the class attributes and ``update_layer``.

    Args:
        model: any ``nn.Module`` (possibly wrapped in DDP or torch.compile).
        optimizer: the optimizer that owns the model's sparse weights.
        config: a :class:`~srigl.trainers.config.SparseConfig` (its ``None`` fields take this
            trainer's ``defaults``), or None to build one from ``options``.
        **options: the fields of ``SparseConfig`` as keywords (not together with ``config``);
            an option not given takes this trainer's ``defaults``, else SparseConfig's.

    The options and their meaning are those of ``SparseConfig``. Every option is checked up
    front (type and range, naming the option); a dynamic trainer whose schedule leaves no
    topology update (delta_t >= t_end) warns. The masks follow the weights: a model moved with
    ``.to(dtype/device)`` after the trainer was built keeps training (masks move lazily to the
    weights' device; they are bool, so the dtype does not matter).
    """

    #: whether the trainer has masks at all (False only for ``dense``)
    sparse: ClassVar[bool] = True
    #: whether the topology changes during training
    dynamic: ClassVar[bool] = True
    #: whether updates need the accumulated dense gradient
    needs_dense_grad: ClassVar[bool] = True
    #: whether the trainer switches neurons off (SRigL's ablation)
    ablates: ClassVar[bool] = False
    #: this trainer's defaults where they differ from SparseConfig's (merged over the parent's)
    defaults: ClassVar[Mapping[str, Any]] = {"constant_fan_in": False, "sparse_init": False}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        merged = {}
        for base in reversed(cls.__mro__[1:]):
            merged.update(base.__dict__.get("defaults", {}))
        cls.defaults = {**merged, **cls.__dict__.get("defaults", {})}

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: SparseConfig | None = None,
        **options: Any,
    ) -> None:
        self._check_model_and_optimizer(model, optimizer)
        config = self.resolve_config(config, options)
        self.model = model
        self.optimizer = optimizer
        self._set_state(config)
        # attention projections stay eligible with sparse_attention=False: they are forced dense
        # and spend their full size from the budget d*N, like every forced-dense layer (SPEC 1)
        eligible = eligible_parameters(model, attention_layers=config.attention_layers)
        self._eligible_numel = sum(p.numel for p in eligible)
        if not self.sparse:
            return
        if self.dynamic:
            self.schedule = self._make_schedule(config)
        if not eligible:
            raise SparsityConfigError(
                "the model has no sparse-eligible weight; allowed: models with Linear, Conv or "
                "MultiheadAttention layers"
            )
        self.layers = build_layers(
            eligible,
            sparsity=self.sparsity,
            distribution=self.distribution,
            dense_layers=config.dense_layers,
            no_ablation=config.no_ablation,
            dense_first_layer=config.dense_first_layer,
            dense_classifier=config.dense_classifier,
            ablate_classifier=config.ablate_classifier,
            erk_power=config.erk_power,
            sparse_attention=config.sparse_attention,
            fan_in=config.fan_in,
            n_m=config.n_m,
        )
        if config.fan_in is not None or config.n_m is not None:
            self.sparsity = self._fixed_fan_in_sparsity(config)
        self._check_optimizer()
        self._claim_parameters()
        try:
            self._init_masks()
        except BaseException:
            self._release_parameters()
            raise
        if self._scaler_active():
            self._last_scale = float(self._scaler.get_scale())
        for name, layer in self.layers.items():
            self._handles.append(layer.param.register_hook(self._make_hook(name)))

    # ------------------------------------------------------------------ set-up

    @classmethod
    def resolve_config(
        cls, config: SparseConfig | None = None, options: Mapping[str, Any] | None = None
    ) -> SparseConfig:
        """This trainer's full config: ``config`` or ``options`` (not both), with the class
        ``defaults`` filling the options not given and a config's ``None`` fields; checked.

        Raises:
            SparsityConfigError: options given with a config, an unknown option, or a value of
                the wrong type or range (the message names it).
        """
        options = dict(options or {})
        label = f"trainer {getattr(cls, 'registry_name', cls.__name__)!r}"
        if config is not None:
            if options:
                raise SparsityConfigError(
                    f"{label}: options {sorted(options)} given with config=; "
                    "allowed: one of them (use dataclasses.replace(config, ...) to change one)"
                )
            if not isinstance(config, SparseConfig):
                raise SparsityConfigError(
                    f"config={type(config).__name__} is not a SparseConfig; allowed: "
                    "srigl.SparseConfig or None"
                )
            options = {k: getattr(config, k) for k in SparseConfig.option_names()}
        for key, value in cls.defaults.items():
            if options.get(key) is None:
                options[key] = value
        config = SparseConfig.from_options(options, where=label)
        cls.check_config(config)
        return config

    @classmethod
    def check_config(cls, config: SparseConfig) -> None:
        """What this trainer requires of a checked config beyond its types and ranges.

        Raises:
            SparsityConfigError: a sparse trainer with sparsity outside (0, 1).
        """
        if cls.sparse:  # 'dense' ignores it (its records carry sparsity=0.0)
            check_sparsity_range(config.sparsity)

    @staticmethod
    def _check_model_and_optimizer(model: Any, optimizer: Any) -> None:
        if not isinstance(model, nn.Module):
            raise SparsityConfigError(f"model={type(model).__name__} is not an nn.Module")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise SparsityConfigError(
                f"optimizer={type(optimizer).__name__} is not a torch.optim.Optimizer"
            )

    def _set_state(self, config: SparseConfig) -> None:
        """The attributes every trainer has, from ``config``, before any layer is built."""
        self.config = config
        # None only with fan_in / n_m: set from the layers' budgets once they are built
        self.sparsity = float("nan") if config.sparsity is None else float(config.sparsity)
        self.distribution = config.distribution
        self.gamma_sal = float(config.gamma_sal)
        self.ablation = bool(config.ablation)
        self.n_m = config.n_m
        self.fan_in = config.fan_in
        # a fixed fan-in or N:M is constant fan-in whatever constant_fan_in says
        fixed = config.fan_in is not None or config.n_m is not None
        self.constant_fan_in = bool(config.constant_fan_in) or fixed
        self.sparse_init = bool(config.sparse_init)
        # every rank draws the same random choices (masks, SET regrowth): rank 0's seed
        seed = int(config.seed)
        self.seed = distributed.broadcast_int(seed) if self.sparse else seed
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)
        self.check_finite = config.check_finite
        self.history: list[dict[str, Any]] = []
        self._step = 0
        self._scaler = config.grad_scaler
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

    def _fixed_fan_in_sparsity(self, config: SparseConfig) -> float:
        """The global sparsity the ``fan_in`` / ``n_m`` budgets give (forced-dense layers count
        in full); a given ``sparsity`` must agree with it within half a weight per sparse neuron
        (or, with ``n_m``, be 1 - N/M).

        Raises:
            SparsityConfigError: naming both when they disagree, or when no layer is sparse.
        """
        total = self._eligible_numel
        sparse_numel = sum(layer.param.numel() for layer in self.layers.values())
        nnz = sum(layer.budget for layer in self.layers.values()) + total - sparse_numel
        implied = 1.0 - nnz / total
        option = f"n_m={config.n_m}" if config.n_m is not None else f"fan_in={config.fan_in!r}"
        if not self.layers:
            raise SparsityConfigError(
                f"{option} leaves no sparse layer (every fan-in is the dense one, or every layer "
                "is kept dense); allowed: a smaller fan-in or fewer dense layers"
            )
        given = config.sparsity
        if given is None:
            return implied
        tolerance = 0.5 * sum(layer.out_features for layer in self.layers.values()) / total
        per_layer = 1.0 - config.n_m[0] / config.n_m[1] if config.n_m is not None else None
        if abs(float(given) - implied) <= tolerance or (
            per_layer is not None and math.isclose(float(given), per_layer, abs_tol=1e-9)
        ):
            return implied
        raise SparsityConfigError(
            f"sparsity={given!r} disagrees with {option}, which gives sparsity {implied:.6f} on "
            f"this model; allowed: omit sparsity, or within {tolerance:.2g} of {implied:.6f}"
        )

    def _make_schedule(self, config: SparseConfig) -> UpdateSchedule:
        """The update schedule of a dynamic trainer; warns when it leaves no update."""
        if config.total_steps is None:
            raise SparsityConfigError(
                f"trainer {self.name!r} needs total_steps; allowed: an integer > 0"
            )
        schedule = UpdateSchedule(
            total_steps=config.total_steps,
            delta_t=config.delta_t,
            alpha=config.alpha,
            t_end_fraction=config.t_end_fraction,
            grad_accumulation_n=config.grad_accumulation_n,
        )
        if schedule.next_update_step(1) is None:  # O(1): no list of every step
            warnings.warn(
                f"trainer {self.name!r}: no topology update can happen: "
                f"delta_t={config.delta_t} >= t_end={schedule.t_end} (= floor(t_end_fraction="
                f"{config.t_end_fraction} * total_steps={config.total_steps})); the masks stay "
                "as initialised. Lower delta_t or raise total_steps",
                UserWarning,
                stacklevel=4,
            )
        return schedule

    @property
    def name(self) -> str:
        """The registry name of this trainer."""
        return getattr(type(self), "registry_name", type(self).__name__)

    # ------------------------------------------------------------------ per step

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
        self._commit_staged()
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

    # ------------------------------------------------------------------ topology update

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
            self._init_grown(layer, new.reshape(mask.shape) & ~kept, kept, self.config.grow_init)
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
            weights and optimizer state stay), ``new_mask & ~kept`` the grown ones (their
            value is ``config.grow_init``, their optimizer state 0).
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
        neuron regrows back to the layer's fan-in (its fixed fan-in, else floor(B / n_active);
        no ablation, so every neuron is active and B / out is whole), or under ``n_m`` each
        group regrows back to N (:func:`drop_grow_n_m`).

        Args:
            weight, grow_score: float [out, F]; mask: bool [out, F]; drop_fraction: f(t).

        Returns:
            (kept, new_mask), bool [out, F], as :meth:`update_layer`.
        """
        n_on = count(mask)
        n_drop = math.floor(drop_fraction * n_on)
        if not self.constant_fan_in:
            return drop_grow_unstructured(weight, mask, grow_score, n_drop)
        return constrained_drop_grow(layer, weight, mask, grow_score, mask.any(1), n_on - n_drop)

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
