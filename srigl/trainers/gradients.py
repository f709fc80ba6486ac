"""Gradients as a trainer sees them: the hooks that mask them (and check them for NaN/inf),
the dense-gradient accumulator over a window of steps, and the GradScaler's skipped steps."""

from __future__ import annotations

import math
from typing import Any

import torch

from srigl import distributed
from srigl.errors import GradScalerOrderError, NonFiniteGradientError
from srigl.schedule import UpdateSchedule


class GradientTracking:
    """Mixin of :class:`~srigl.trainers.base.SparseTrainer`: owns ``_acc`` and ``_staged``."""

    layers: dict[str, Any]
    optimizer: torch.optim.Optimizer
    schedule: UpdateSchedule | None
    needs_dense_grad: bool
    check_finite: bool
    _scaler: Any
    _last_scale: float | None
    _acc: dict[str, torch.Tensor]
    _acc_steps: int
    _staged: dict[str, torch.Tensor]
    _step: int

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

    def _commit_staged(self) -> None:
        """Add the gradients staged under AMP (a step the scaler did not skip) to the window."""
        for name, g in self._staged.items():
            _add_into(self._acc, name, g)
        self._staged = {}

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
