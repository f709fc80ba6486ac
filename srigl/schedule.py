"""When the topology changes, and by how much: the update schedule and cosine drop fraction."""

from __future__ import annotations

import math
from dataclasses import dataclass

from srigl.errors import SparsityConfigError
from srigl.errors import require_int as _integer
from srigl.errors import require_real as _real


def check_schedule(
    total_steps: object,
    delta_t: object,
    alpha: object,
    t_end_fraction: object,
    grad_accumulation_n: object,
) -> tuple[int | None, int, float, float, int]:
    """The schedule's values checked and converted (any integral / real type is accepted):
    ``(total_steps, delta_t, alpha, t_end_fraction, grad_accumulation_n)``; ``total_steps``
    may be None (a trainer without updates). The one copy of these rules, used by
    :class:`UpdateSchedule` and by the trainers' up-front argument checks.

    Raises:
        SparsityConfigError: naming the value and what is allowed.
    """
    total = None
    if total_steps is not None:
        total = _integer("total_steps", total_steps, "an integer > 0")
        if total <= 0:
            raise SparsityConfigError(f"total_steps={total_steps!r} is invalid; allowed: > 0")
    d = _integer("delta_t", delta_t, "an integer > 0")
    if d <= 0:
        raise SparsityConfigError(f"delta_t={delta_t!r} is invalid; allowed: an integer > 0")
    a = _real("alpha", alpha, "0 <= alpha <= 1")
    if not 0.0 <= a <= 1.0:
        raise SparsityConfigError(f"alpha={alpha!r} is invalid; allowed: 0 <= alpha <= 1")
    t = _real("t_end_fraction", t_end_fraction, "0 < t_end_fraction <= 1")
    if not 0.0 < t <= 1.0:
        raise SparsityConfigError(
            f"t_end_fraction={t_end_fraction!r} is invalid; allowed: 0 < value <= 1"
        )
    allowed = f"an integer in [1, delta_t={d}]"
    n = _integer("grad_accumulation_n", grad_accumulation_n, allowed)
    if not 1 <= n <= d:
        raise SparsityConfigError(
            f"grad_accumulation_n={grad_accumulation_n!r} is invalid; allowed: {allowed}"
        )
    return total, d, a, t, n


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
        if self.total_steps is None:  # check_schedule lets None pass (trainers without updates)
            raise SparsityConfigError("total_steps=None is invalid; allowed: an integer > 0")
        values = check_schedule(
            self.total_steps,
            self.delta_t,
            self.alpha,
            self.t_end_fraction,
            self.grad_accumulation_n,
        )
        for name, value in zip(
            ("total_steps", "delta_t", "alpha", "t_end_fraction", "grad_accumulation_n"), values
        ):
            object.__setattr__(self, name, value)  # numpy ints and floats become Python ones

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
