"""Vectorised drop/grow primitives shared by the trainers (no Python loop over neurons).

Every function works on one layer viewed as a 2-D matrix [out, fan_in] (row i = neuron i).
Scores are float tensors where ``-inf`` marks a position that must never be chosen (NaN is
treated as -inf). Ties are broken deterministically: among equal scores the lower (flat, or
in-row) index wins, on every device and rank. Selections use thresholds (``kthvalue``,
``topk`` values) rather than full sorts, so an update costs a few passes over each layer.
"""

from __future__ import annotations

import math

import torch

NEG_INF = float("-inf")


def count(x: torch.Tensor) -> int:
    """Number of True (non-zero) entries of ``x``, as a Python int."""
    return int(torch.count_nonzero(x))


def row_count(x: torch.Tensor) -> torch.Tensor:
    """Number of True entries in each row of a bool [out, F] tensor, int64 [out].

    A float matrix-vector product: several times faster than reducing bools on the CPU, and
    exact (fan-ins are far below 2**24).
    """
    ones = torch.ones(x.shape[1], dtype=torch.float32, device=x.device)
    return torch.mv(x.to(torch.float32), ones).to(torch.int64)


def masked_score(values: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """|values| as a float score, -inf where ``where`` is False and where values are NaN.

    Args:
        values: float [...]; where: bool of the same shape, or None (every position eligible).
    """
    score = values.abs() if values.is_floating_point() else values.abs().float()
    score = torch.nan_to_num(score, nan=NEG_INF, posinf=torch.finfo(score.dtype).max)
    if where is not None:
        score.masked_fill_(~where, NEG_INF)
    return score


def _top_n_flat(values: torch.Tensor, n: int, n_eligible: int | None = None) -> torch.Tensor:
    """Bool [m]: the n largest of a 1-D score tensor (no NaN); -inf never chosen."""
    m = values.numel()
    finite = count(values > NEG_INF) if n_eligible is None else n_eligible
    n = min(int(n), finite)
    if n <= 0:
        return torch.zeros(m, dtype=torch.bool, device=values.device)
    if n == m:
        return torch.ones(m, dtype=torch.bool, device=values.device)
    threshold = torch.kthvalue(values, m - n + 1).values  # the n-th largest
    chosen = values > threshold
    need = n - count(chosen)
    ties = torch.nonzero(values == threshold).squeeze(1)[:need]
    chosen[ties] = True
    return chosen


def top_n_mask(
    score: torch.Tensor,
    n: int,
    within: torch.Tensor | None = None,
    n_eligible: int | None = None,
) -> torch.Tensor:
    """Bool mask (shape of ``score``) of the ``n`` highest scores over the whole tensor.

    Args:
        score: float [...] without NaN (use :func:`masked_score`); -inf is never chosen.
        n: how many to choose; fewer come back when fewer positions are eligible.
        within: optional bool mask of the only eligible positions (faster than -inf when few).
        n_eligible: the number of scores above -inf, if the caller knows it (saves a pass).

    Equal scores: the lower flat index wins.
    """
    flat = score.reshape(-1)
    if within is None:
        return _top_n_flat(flat, n, n_eligible).view(score.shape)
    idx = torch.nonzero(within.reshape(-1)).squeeze(1)
    out = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    out[idx[_top_n_flat(flat[idx], n)]] = True
    return out.view(score.shape)


def row_top_mask(score: torch.Tensor, need: torch.Tensor | int) -> torch.Tensor:
    """Bool mask [out, F] selecting, in each row i, the ``need[i]`` highest scores of that row.

    Args:
        score: float [out, F] without NaN.
        need: int64 [out] (or one int for every row), 0 <= need[i] <= F.

    Equal scores: the lower column index wins. Positions scored -inf are chosen only when a
    row needs more positions than it has eligible ones; callers avoid that.
    """
    rows, cols = score.shape
    if isinstance(need, int):
        need = torch.full((rows,), need, dtype=torch.long, device=score.device)
    need = need.to(torch.long)
    top = int(need.max()) if rows else 0
    if top <= 0:
        return torch.zeros((rows, cols), dtype=torch.bool, device=score.device)
    # the need_i-th and (need_i + 1)-th largest value of every row
    values = torch.topk(score, min(top + 1, cols), dim=1, sorted=True).values
    threshold = values.gather(1, (need - 1).clamp(min=0).view(rows, 1))
    wanted = (need > 0).view(rows, 1)
    chosen = (score >= threshold) & wanted
    # a row whose (need_i + 1)-th value equals its threshold has a tie across the cut: there,
    # take every score above the threshold and then the tied ones from the left
    beyond = values.gather(1, need.clamp(max=values.shape[1] - 1).view(rows, 1))
    crowded = (need > 0) & (need < cols) & (beyond.view(rows) == threshold.view(rows))
    crowded = torch.nonzero(crowded).squeeze(1)
    if crowded.numel():
        sub_score, sub_thr = score[crowded], threshold[crowded]
        above = sub_score > sub_thr
        remaining = need[crowded] - row_count(above)
        ties = sub_score == sub_thr
        rank = torch.cumsum(ties, dim=1, dtype=torch.int32)
        chosen[crowded] = above | (ties & (rank <= remaining.view(-1, 1)))
    return chosen


def drop_grow_unstructured(
    weight: torch.Tensor, mask: torch.Tensor, grow_score: torch.Tensor, n_drop: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """RigL/SET drop and grow over a whole layer; nnz is unchanged.

    Drops the ``n_drop`` smallest-magnitude active weights, then grows the ``n_drop`` positions
    not kept with the highest ``grow_score`` (a just-dropped position may come back).

    Args:
        weight: float [out, F]; mask: bool [out, F]; grow_score: float [out, F], higher is
        better, no NaN (e.g. ``masked_score(dense_grad)`` or uniform random numbers);
        n_drop: 0 <= n_drop <= nnz.

    Returns:
        (kept, new_mask), both bool [out, F]; the grown positions are new_mask & ~kept.
    """
    nnz = count(mask)
    kept = top_n_mask(masked_score(weight), nnz - n_drop, within=mask)
    n_kept = count(kept)
    grow_candidates = grow_score.masked_fill(kept, NEG_INF)
    grow = top_n_mask(grow_candidates, nnz - n_kept, n_eligible=kept.numel() - n_kept)
    return kept, kept | grow


def drop_grow_fan_in(
    weight: torch.Tensor,
    mask: torch.Tensor,
    grow_score: torch.Tensor,
    active: torch.Tensor,
    n_keep: int,
    k: int,
    kept: torch.Tensor | None = None,
    extra: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant fan-in drop and grow (SRigL steps 3-5).

    Drop: keep the layer-wide top ``n_keep`` by |W| among the active weights of active rows.
    Fan-ins: every active row gets ``k``, and ``extra`` of them ``k + 1`` (the remainder of a
    budget that the active rows do not divide: B = k * n_active + extra). Those rows are the
    ones that kept the most weights, ties going to the row whose best position not kept has the
    highest ``grow_score``, then to the lower row index; so a row that holds k + 1 and keeps them
    keeps its extra slot. A row keeping more than its fan-in keeps only its largest. Grow: each
    active row grows its fan-in minus what it kept, ranked by ``grow_score`` within the row.

    Args:
        weight: float [out, F]; mask: bool [out, F]; grow_score: float [out, F], higher is
        better, no NaN (e.g. ``masked_score(dense_grad)``);
        active: bool [out], the neurons that stay on; n_keep: >= 0; k: 1 <= k <= F;
        kept: the layer-wide top-n_keep selection if the caller already has it (bool [out, F]);
        extra: 0 <= extra < number of active rows (k + 1 <= F when extra > 0).

    Returns:
        (kept, new_mask), bool [out, F]: every active row of new_mask has exactly k True
        positions (``extra`` of them k + 1), every inactive row none.
    """
    if extra and not (0 < extra < count(active) and k + 1 <= weight.shape[1]):
        raise ValueError(
            f"extra={extra} with k={k}: allowed 0 <= extra < active rows ({count(active)}) and "
            f"k + 1 <= fan-in ({weight.shape[1]})"
        )
    if kept is None:
        kept = top_n_mask(masked_score(weight), n_keep, within=mask & active.view(-1, 1))
    per_row = row_count(kept)
    target = _row_fan_ins(kept, per_row, grow_score, active, k, extra)
    over = torch.nonzero(per_row > target).squeeze(1)
    if over.numel():
        sub = kept[over]
        sub &= row_top_mask(masked_score(weight[over], sub), target[over])
        kept = kept.clone()
        kept[over] = sub
        per_row = row_count(kept)
    need = (target - per_row) * active.long()
    grow = row_top_mask(grow_score.masked_fill(kept, NEG_INF), need)
    return kept, kept | grow


def _row_fan_ins(
    kept: torch.Tensor,
    per_row: torch.Tensor,
    grow_score: torch.Tensor,
    active: torch.Tensor,
    k: int,
    extra: int,
) -> torch.Tensor:
    """int64 [out]: k for every row, k + 1 for the ``extra`` active rows of
    :func:`drop_grow_fan_in`'s rule (most kept, then best free grow score, then lower index)."""
    target = torch.full_like(per_row, k)
    if extra <= 0:
        return target
    best_free = grow_score.masked_fill(kept, NEG_INF).amax(1)
    order = torch.sort(best_free, descending=True, stable=True).indices
    held = torch.where(active, per_row.clamp(max=k + 1), torch.full_like(per_row, -1))
    order = order[torch.sort(held[order], descending=True, stable=True).indices]
    target[order[:extra]] = k + 1
    return target


def weight_salient(weight: torch.Tensor, mask: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool [out, F]: the top ``n_keep`` active weights by |W| over the whole layer."""
    return top_n_mask(masked_score(weight), n_keep, within=mask)


def salient_counts(
    weight: torch.Tensor,
    mask: torch.Tensor,
    grad_score: torch.Tensor,
    n_keep: int,
    n_drop: int,
    by_weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """SRigL step 2: per-neuron count of salient weights, int64 [out].

    The salient set is the UNION of the top ``n_keep`` active weights by |W| (``by_weight``,
    bool [out, F], computed if not given) and the top ``n_drop`` positions by ``grad_score``
    (float [out, F], ``masked_score(dense_grad)``), each ranked over the whole layer
    (SPEC.md section 2, the paper's and the reference code's rule). The gradient set is not
    restricted to positions outside the weight set: a position in both counts once, so when
    large weights carry large gradients fewer neurons reach the threshold.

    Args:
        weight: float [out, F]; mask: bool [out, F]; n_keep, n_drop: >= 0.
    """
    if by_weight is None:
        by_weight = weight_salient(weight, mask, n_keep)
    by_grad = top_n_mask(grad_score, n_drop)
    return row_count(by_weight | by_grad)


def neurons_to_keep(counts: torch.Tensor, tau: int, min_active: int) -> torch.Tensor:
    """SRigL ablation: bool [out], True for neurons with ``counts >= tau``.

    If fewer than ``min_active`` survive, the ``min_active`` neurons with the highest counts
    (lower index on ties) are kept instead, so the new fan-in never exceeds the dense fan-in.
    """
    keep = counts >= tau
    if count(keep) < min_active:
        keep = top_n_mask(counts.double(), min_active)
    return keep


def min_active_neurons(budget: int, fan_in: int) -> int:
    """ceil(budget / fan_in): the fewest neurons that can hold ``budget`` weights."""
    return max(1, math.ceil(budget / fan_in))


def group_view(x: torch.Tensor, m: int) -> torch.Tensor:
    """View a [out, F] tensor as its groups of ``m`` consecutive inputs, [out * F / m, m].

    Group g of neuron i holds columns g*m .. g*m + m - 1 of row i (F must be a multiple of m).
    """
    return x.reshape(-1, m)


def drop_grow_n_m(
    weight: torch.Tensor,
    mask: torch.Tensor,
    grow_score: torch.Tensor,
    active: torch.Tensor,
    n_keep: int,
    n: int,
    m: int,
    kept: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """N:M drop and grow: every group of ``m`` consecutive inputs of an active row ends with
    exactly ``n`` non-zeros, every inactive row with none.

    Drop: keep the layer-wide top ``n_keep`` by |W| among the active weights of active rows
    (RigL's magnitude drop, so the lowest magnitudes of the layer go). Grow: each group of an
    active row grows ``n - kept_g`` of its positions not kept, the highest ``grow_score``
    within the group (a just-dropped position may come back, as in RigL).

    Args:
        weight: float [out, F]; mask: bool [out, F] with at most n per group; grow_score: float
        [out, F], higher is better, no NaN; active: bool [out]; n_keep: >= 0; 1 <= n < m,
        F a multiple of m; kept: the layer-wide top-n_keep selection if the caller has it.

    Returns:
        (kept, new_mask), bool [out, F].
    """
    rows, fan_in = mask.shape
    if kept is None:
        kept = top_n_mask(masked_score(weight), n_keep, within=mask & active.view(-1, 1))
    groups_kept = group_view(kept, m)
    per_group = row_count(groups_kept)
    if bool((per_group > n).any()):  # a mask that broke the rule: keep each group's n largest
        groups_kept = groups_kept & row_top_mask(
            group_view(masked_score(weight), m).masked_fill(~groups_kept, NEG_INF), n
        )
        per_group = row_count(groups_kept)
        kept = groups_kept.view(rows, fan_in)
    group_active = active.view(-1, 1).expand(rows, fan_in // m).reshape(-1)
    need = (n - per_group) * group_active.long()
    grow = row_top_mask(group_view(grow_score.masked_fill(kept, NEG_INF), m), need)
    return kept, kept | grow.view(rows, fan_in)
