"""When the topology changes, and by how much: the update schedule and cosine drop fraction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from srigl.errors import SparsityConfigError


@dataclass(frozen=True)
class UpdateSchedule:
    """The topology-update schedule shared by every dynamic trainer (SPEC.md section 2).

    ``step`` counts completed optimizer steps (1 after the first). A topology update happens at
    ``step`` when ``step % delta_t == 0`` and ``step < t_end``; the first is at ``delta_t``.

    Args:
        total_steps: the number of optimizer steps of the whole run.
        delta_t: steps between updates (> 0).
        alpha: the initial drop fraction, in [0, 1].
        t_end_fraction: t_end = floor(t_end_fraction * total_steps), in (0, 1].
        grad_accumulation_n: optimizer steps, ending with the update step, whose gradients are
            averaged into the dense gradient used to grow; in [1, delta_t].
    """

    total_steps: int
    delta_t: int = 100
    alpha: float = 0.3
    t_end_fraction: float = 0.75
    grad_accumulation_n: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.total_steps, int) or self.total_steps <= 0:
            raise SparsityConfigError(
                f"total_steps={self.total_steps!r} is invalid; allowed: an integer > 0"
            )
        if not isinstance(self.delta_t, int) or self.delta_t <= 0:
            raise SparsityConfigError(
                f"delta_t={self.delta_t!r} is invalid; allowed: an integer > 0"
            )
        if not 0.0 <= self.alpha <= 1.0:
            raise SparsityConfigError(f"alpha={self.alpha!r} is invalid; allowed: 0 <= alpha <= 1")
        if not 0.0 < self.t_end_fraction <= 1.0:
            raise SparsityConfigError(
                f"t_end_fraction={self.t_end_fraction!r} is invalid; allowed: 0 < value <= 1"
            )
        n = self.grad_accumulation_n
        if not isinstance(n, int) or not 1 <= n <= self.delta_t:
            raise SparsityConfigError(
                f"grad_accumulation_n={n!r} is invalid; allowed: an integer in "
                f"[1, delta_t={self.delta_t}]"
            )

    @property
    def t_end(self) -> int:
        """The step from which on no update happens: floor(t_end_fraction * total_steps)."""
        return math.floor(self.t_end_fraction * self.total_steps)

    def is_update_step(self, step: int) -> bool:
        """Whether a topology update happens after optimizer step ``step`` (1-based)."""
        return step > 0 and step % self.delta_t == 0 and step < self.t_end

    def drop_fraction(self, step: int) -> float:
        """The cosine drop fraction f(t) = alpha/2 * (1 + cos(pi * t / t_end)) at ``step``."""
        t_end = self.t_end
        if t_end <= 0:
            return 0.0
        return self.alpha / 2.0 * (1.0 + math.cos(math.pi * step / t_end))

    def next_update_step(self, step: int) -> int | None:
        """The first update step >= ``step``, or None when no update is left."""
        candidate = max(1, math.ceil(step / self.delta_t)) * self.delta_t
        return candidate if candidate < self.t_end else None

    def accumulates(self, step: int) -> bool:
        """Whether the gradient of optimizer step ``step`` goes into the dense-gradient average.

        That is the case for the ``grad_accumulation_n`` steps ending with an update step.
        """
        nxt = self.next_update_step(step)
        return nxt is not None and nxt - step < self.grad_accumulation_n

    def update_steps(self) -> list[int]:
        """Every step at which a topology update happens, in order."""
        return list(range(self.delta_t, self.t_end, self.delta_t))
