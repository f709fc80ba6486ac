"""Claims computed from the records: paired differences over seeds with 95% intervals.

Every claim the report (and the README's results block) makes about one method against another
is a row of :func:`claims_frame`, rendered into prose by :func:`claim_lines`; no accuracy claim
is written by hand. For each pair of :data:`COMPARISONS`, per experiment and sparsity, the runs
are paired by seed (same experiment, same sparsity, same seed; ``dense`` is trained once per
seed and pairs with every sparsity), the per-seed differences of top-1 accuracy (first method
minus second, in points) give a mean and a two-sided 95% t-interval (Student's t with n - 1
degrees of freedom, :mod:`scipy.stats`), and the interval gives the verdict word:

- ``better``: the interval lies above 0 (the first method is more accurate);
- ``worse``: the interval lies below 0;
- ``no measurable difference``: the interval holds 0;
- ``too few seeds``: fewer than 2 paired seeds (no interval).

Seeds whose differences are all equal have a zero-width interval (bitwise-repeatable runs
of two configs that do the same thing: the interval is [d, d]).
Each interval is per comparison: over many comparisons about 5% of those without a real
difference read ``better`` or ``worse`` by chance, which the prose says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
BETTER = "better"
WORSE = "worse"
NO_DIFFERENCE = "no measurable difference"
TOO_FEW = "too few seeds"
VERDICTS = (BETTER, WORSE, NO_DIFFERENCE, TOO_FEW)
# Two sparse methods whose measured densities differ by more than this (relative) are flagged.
BUDGET_TOLERANCE = 0.01
DENSE = "dense"
# (first, second): the claim reads "first is <verdict> than second".
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("srigl", "rigl"),
    ("srigl", DENSE),
    ("srigl", "srigl_no_ablation"),
    ("rigl", "rigl_sparse_init"),
)
CLAIM_COLUMNS = (
    "experiment",
    "sparsity",
    "first",
    "second",
    "n",
    "mean_first",
    "mean_second",
    "density_first",
    "density_second",
    "diff",
    "low",
    "high",
    "verdict",
)


@dataclass(frozen=True)
class PairedDifference:
    """Mean of per-seed differences (first - second) with its two-sided interval."""

    n: int
    mean: float
    low: float
    high: float
    verdict: str


def mean_interval(
    values: Sequence[float] | np.ndarray, level: float = LEVEL
) -> tuple[float, float]:
    """Two-sided t-interval of the mean of ``values`` (NaN, NaN with fewer than 2 values).

    Also the error bar of the accuracy figure (seaborn calls it with a cell's seeds).
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) < 2:
        return (math.nan, math.nan)
    mean = float(x.mean())
    sem = float(stats.sem(x))
    if sem == 0.0:
        return (mean, mean)
    low, high = stats.t.interval(level, df=len(x) - 1, loc=mean, scale=sem)
    return (float(low), float(high))


def verdict_of(low: float, high: float, n: int) -> str:
    """The verdict word of an interval of first - second over ``n`` paired seeds."""
    if n < 2 or math.isnan(low) or math.isnan(high):
        return TOO_FEW
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return NO_DIFFERENCE


def paired_difference(
    first: pd.Series, second: pd.Series, level: float = LEVEL
) -> PairedDifference:
    """Pair ``first`` and ``second`` (values indexed by seed) by seed; the mean difference
    first - second over the common seeds, its t-interval and its verdict."""
    common = first.index.intersection(second.index)
    diffs = (first.loc[common] - second.loc[common]).to_numpy(dtype=float)
    n = len(diffs)
    mean = float(diffs.mean()) if n else math.nan
    low, high = mean_interval(diffs, level)
    return PairedDifference(n=n, mean=mean, low=low, high=high, verdict=verdict_of(low, high, n))


def _by_seed(frame: pd.DataFrame, column: str) -> pd.Series:
    """``column`` indexed by seed (one row per seed: the tabled, de-duplicated cells)."""
    return frame.drop_duplicates("seed", keep="last").set_index("seed")[column]


def claims_frame(
    train: pd.DataFrame, comparisons: Sequence[tuple[str, str]] = COMPARISONS
) -> pd.DataFrame:
    """One row per (comparison, experiment, sparsity) where both methods have runs.

    Args:
        train: the tabled rows of :func:`suite.report.frames.train_frame` (one cell per
            experiment, method and sparsity; columns experiment, method, sparsity, seed, top1,
            density).

    Returns:
        Columns of :data:`CLAIM_COLUMNS`: the mean top-1 and measured density of each method
        (over its own seeds), the mean paired difference ``diff`` (points of top-1), its 95%
        interval ``low``/``high`` and the verdict; in the order of ``comparisons``, then
        experiment and sparsity.
    """
    rows = []
    if "density" not in train:
        train = train.assign(density=math.nan)
    for first, second in comparisons:
        a_all = train[train["method"] == first]
        b_all = train[train["method"] == second]
        for (exp, sp), a in a_all.groupby(["experiment", "sparsity"], sort=True):
            b = b_all[b_all["experiment"] == exp]
            if second != DENSE:
                b = b[b["sparsity"] == sp]
            if b.empty:
                continue
            top_a, top_b = _by_seed(a, "top1"), _by_seed(b, "top1")
            pair = paired_difference(top_a, top_b)
            rows.append(
                {
                    "experiment": exp,
                    "sparsity": float(sp),
                    "first": first,
                    "second": second,
                    "n": pair.n,
                    "mean_first": float(top_a.mean()),
                    "mean_second": float(top_b.mean()),
                    "density_first": float(_by_seed(a, "density").mean()),
                    "density_second": float(_by_seed(b, "density").mean()),
                    "diff": pair.mean,
                    "low": pair.low,
                    "high": pair.high,
                    "verdict": pair.verdict,
                }
            )
    return pd.DataFrame(rows, columns=list(CLAIM_COLUMNS))


def format_difference(diff: float, low: float, high: float) -> str:
    """``"+0.33 [-0.24, +0.90]"``; ``"+0.33 (no interval)"`` without one; ``-`` for none."""
    if math.isnan(diff):
        return "-"
    if math.isnan(low) or math.isnan(high):
        return f"{diff:+.2f} (no interval)"
    return f"{diff:+.2f} [{low:+.2f}, {high:+.2f}]"


def format_density(density: float) -> str:
    """Measured density in percent of the sparse layers' weights: ``0.0482 -> "4.82%"``."""
    return "-" if density is None or math.isnan(density) else f"{density:.2%}"


def _sparsity_label(sparsity: float) -> str:
    return f"{sparsity * 100:g}%"


def claims_table(claims: pd.DataFrame) -> pd.DataFrame:
    """:func:`claims_frame` for reading: a row per claim with text cells."""
    cols = ["comparison", "experiment", "sparsity", "top-1 first", "top-1 second"]
    cols += ["density first / second", "difference [95% CI]", "paired seeds", "verdict"]
    rows = [
        {
            "comparison": f"{r.first} vs {r.second}",
            "experiment": r.experiment,
            "sparsity": _sparsity_label(r.sparsity),
            "top-1 first": f"{r.mean_first:.2f}",
            "top-1 second": f"{r.mean_second:.2f}",
            "density first / second": (
                f"{format_density(r.density_first)} / {format_density(r.density_second)}"
            ),
            "difference [95% CI]": format_difference(r.diff, r.low, r.high),
            "paired seeds": r.n,
            "verdict": r.verdict,
        }
        for r in claims.itertuples()
    ]
    return pd.DataFrame(rows, columns=cols)


def claim_lines(claims: pd.DataFrame) -> list[str]:
    """The claims as Markdown list items, one per (comparison, experiment).

    Each says, per verdict, at which sparsities it holds, with the paired difference and its
    interval, e.g. ``"`srigl` vs `rigl`, digits_mlp: better at 99% (+8.50 [+4.12, +12.88]);
    no measurable difference at 80% (...), 90% (...)."``. Verdicts in the order of
    :data:`VERDICTS`; empty for no claims.
    """
    lines = []
    for (first, second, exp), grp in claims.groupby(["first", "second", "experiment"], sort=False):
        parts = []
        for verdict in VERDICTS:
            hits = grp[grp["verdict"] == verdict].sort_values("sparsity")
            if hits.empty:
                continue
            at = ", ".join(
                f"{_sparsity_label(r.sparsity)} ({format_difference(r.diff, r.low, r.high)})"
                for r in hits.itertuples()
            )
            parts.append(f"{verdict} at {at}")
        lines.append(f"- `{first}` vs `{second}`, {exp}: {'; '.join(parts)}.")
    return lines


def claims_summary(claims: pd.DataFrame, level: float = LEVEL) -> str:
    """One sentence counting the verdicts and the false positives to expect by chance."""
    if claims.empty:
        return "No pair of compared methods has runs of the same experiment and sparsity."
    counts = claims["verdict"].value_counts()
    tested = int(len(claims) - counts.get(TOO_FEW, 0))
    parts = [f"{int(counts[v])} {v}" for v in VERDICTS if counts.get(v, 0)]
    text = (
        f"{len(claims)} comparisons: {', '.join(parts)}. Each interval holds for its own "
        f"comparison: of {tested} with an interval, about {tested * (1 - level):.1f} would read "
        f"better or worse by chance alone if no method differed."
    )
    apart = unequal_budgets(claims)
    if apart:
        text += (
            f" In {apart} comparison(s) of two sparse methods the measured densities differ by "
            f"more than {BUDGET_TOLERANCE:.0%} (relative; see the densities): there the "
            f"difference mixes the method with its weight budget."
        )
    return text


def unequal_budgets(claims: pd.DataFrame, tolerance: float | None = None) -> int:
    """How many claims compare two sparse methods whose measured densities differ by more
    than ``tolerance`` (relative to the larger; default :data:`BUDGET_TOLERANCE`)."""
    tolerance = BUDGET_TOLERANCE if tolerance is None else tolerance
    sparse = claims[claims["second"] != DENSE]
    larger = np.maximum(sparse["density_first"], sparse["density_second"])
    gap = (sparse["density_first"] - sparse["density_second"]).abs() / larger
    return int((gap > tolerance).sum())
