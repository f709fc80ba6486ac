"""A trainer's state dict: save, and load with the checks of the masks' invariants."""

from __future__ import annotations

from typing import Any

import torch

from srigl.errors import StateDictError
from srigl.schedule import UpdateSchedule

#: 2 since the equal-budgets rule (commit 7bca2d3, 2026-12-07: every sparse method's
#: per-layer budget B_l = k_l * out_l from :func:`srigl.budgets.constant_fan_in_allocation`);
#: version 1 states may hold masks of the older per-method budgets (see :meth:`load_state_dict`).
#: 3 since the remainder rule (:data:`REMAINDER_RULE`): after ablation SRigL's layers hold their
#: whole budget; a version-2 state holding an ablated layer of the floor rule is refused.
#: The version is in no record hash and no run id: it never changes training results.
STATE_VERSION = 3
#: the commit that introduced the equal-budgets rule (named in the version-1 error)
EQUAL_BUDGETS_COMMIT = "7bca2d3 (2026-12-07)"
#: when SRigL started spending the remainder of B / n_active (named in the version-2 error)
REMAINDER_RULE = "trainer state version 3, 2026-12-07"


class TrainerState:
    """Mixin of :class:`~srigl.trainers.base.SparseTrainer`: ``state_dict`` and its loading."""

    layers: dict[str, Any]
    masks: dict[str, torch.Tensor]
    schedule: UpdateSchedule | None
    needs_dense_grad: bool
    sparse: bool
    ablation: bool
    constant_fan_in: bool
    generator: torch.Generator
    history: list[dict[str, Any]]
    name: str
    _step: int
    _acc: dict[str, torch.Tensor]
    _acc_steps: int
    _staged: dict[str, torch.Tensor]
    _last_scale: float | None

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

        A version-1 state (saved before :data:`STATE_VERSION` 2) loads only where its masks
        fit the equal-budgets rule (commits 7bca2d3.. saved version 1 too); otherwise the error
        says it was saved before that rule. A version-2 state likewise loads where its masks fit
        the remainder rule (an SRigL layer with ablated neurons holds its whole budget).

        Raises:
            StateDictError: another trainer, masks whose names or shapes differ or that break
                the invariants, a version-1 (2) state saved before the equal-budgets (remainder)
                rule, or a version newer than this code's.
        """
        version = state.get("version", STATE_VERSION)
        if not isinstance(version, int) or version > STATE_VERSION:
            raise StateDictError(
                f"trainer state version {version!r}; allowed: 1..{STATE_VERSION} (saved by a "
                "newer srigl-bench)"
            )
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
            try:
                self._check_loaded_mask(name, mask)
            except StateDictError as exc:
                if version >= 3:
                    raise
                if version == 2:
                    raise StateDictError(
                        "trainer state version 2 whose masks do not fit the remainder rule: "
                        f"saved before it ({REMAINDER_RULE}: after ablation SRigL holds the "
                        "whole budget, B - k * n_active neurons keeping k + 1); retrain, or "
                        f"resume with an older commit ({exc})"
                    ) from exc
                raise StateDictError(
                    "trainer state version 1 whose masks do not fit the equal-budgets rule: "
                    f"saved before it (commit {EQUAL_BUDGETS_COMMIT}: every sparse method now "
                    "holds the per-layer budget of srigl.budgets.constant_fan_in_allocation); "
                    f"retrain, or resume with a commit before 7bca2d3 ({exc})"
                ) from exc
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

    def check_masks(self) -> None:
        """Check this trainer's live masks against the invariants a loaded state must meet
        (:meth:`_check_loaded_mask`: constant fan-in k or k + 1 and the layer's budget, N:M
        groups, ablation only where allowed, or B non-zeros unstructured).

        Raises:
            StateDictError: the first mask that breaks one, naming it and what is allowed.
        """
        for name, mask in self.masks.items():
            self._check_loaded_mask(name, mask)

    def _check_loaded_mask(self, name: str, mask: torch.Tensor) -> None:
        """Refuse a loaded mask that breaks this trainer's invariants (SPEC.md sections 1-2):
        bool (or 0/1) values; constant fan-in k = floor(B / n_active) (or the layer's fixed
        fan-in) in every active neuron and k + 1 in B - k * n_active of them, exactly N per
        group of M with ``n_m``, no ablated neuron where ablation is off; or, unstructured,
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
        can_ablate = self.ablation and layer.may_ablate and type(self).ablates
        if n_active < layer.out_features and not can_ablate:
            raise StateDictError(
                f"{where} has {layer.out_features - n_active} ablated neurons; allowed: none "
                "(this trainer does not ablate this layer)"
            )
        k = layer.fan_in_for(n_active)
        extra = layer.extra_for(n_active)
        kept = rows[active]
        lo, hi = int(kept.min()), int(kept.max())
        # k in every active neuron and k + 1 in exactly `extra` of them (extra 0: all k)
        if not (lo >= k and hi <= k + 1 and int((kept == k + 1).sum()) == extra):
            rule = "the fixed fan-in" if layer.fixed_fan_in else "floor(B / n_active)"
            more = f", and k + 1 in exactly {extra} of them (B - k * n_active)" if extra else ""
            raise StateDictError(
                f"{where}: its {n_active} active neurons keep {lo}..{hi} non-zeros; allowed: "
                f"k = {rule} = {k} each{more} (constant fan-in)"
            )
        if layer.n_m is not None:
            n, m = layer.n_m
            groups = mask.reshape(layer.out_features, -1, m).to(torch.bool).sum(2)[active]
            if bool((groups != n).any()):
                raise StateDictError(
                    f"{where}: groups of M = {m} inputs of active neurons keep "
                    f"{int(groups.min())}..{int(groups.max())} non-zeros; allowed: exactly N = {n} "
                    f"each (n_m={layer.n_m})"
                )

    def _steps_in_window(self) -> int:
        """Steps up to now that belong to the current accumulation window."""
        if self.schedule is None or not self.needs_dense_grad:
            return 0
        n = self.schedule.grad_accumulation_n
        return sum(
            self.schedule.accumulates(s) for s in range(max(1, self._step - n + 1), self._step + 1)
        )
