"""Neuron ablation on a transformer: the digits ViT beside the paper's ImageNet ViT-B/16
(``make reproduce PROFILE=transformer``, issue 22).

The SRigL paper's strongest case for neuron ablation is ViT-B/16 (gamma_sal 0.95): SRigL with
ablation close to RigL, without it several points lower. This section puts the ``digits_vit``
runs (dense, rigl, srigl, srigl_no_ablation at 80-99%, 5 seeds) in one table with the paper's
ViT-B/16 rows (``reference/accuracy.csv``, the report's one copy of the paper's figures), and
per sparsity the computed paired verdicts of :mod:`suite.report.claims` (``srigl`` vs
``srigl_no_ablation`` and ``srigl`` vs ``rigl``) beside the paper's differences. Without
``digits_vit`` records the section says how to produce them and shows the paper's rows alone.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from suite.report import claims as cl
from suite.report import frames as rd

#: the embedded experiment of profile=transformer, and the paper's experiment it stands in for
EXPERIMENT = "digits_vit"
PAPER_EXPERIMENT = "imagenet_vit_b16"
PROFILE = "transformer"
#: (first, second): ablation's effect, and SRigL against unstructured RigL
COMPARISONS: tuple[tuple[str, str], ...] = (("srigl", "srigl_no_ablation"), ("srigl", "rigl"))
VERDICT_COLUMNS = (
    "sparsity",
    *(f"{a} vs {b}" for a, b in COMPARISONS),
    *(f"paper: {a} - {b}" for a, b in COMPARISONS),
)


def paper_rows(reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's ViT-B/16 rows of ``reference`` (columns of ``reference/accuracy.csv``)."""
    return reference[reference["experiment"] == PAPER_EXPERIMENT].assign(
        sparsity=lambda f: f["sparsity"].astype(float)
    )


def accuracy_table(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """A row per method (ours, then ``paper: <method>`` for ViT-B/16), a column per sparsity.

    Args:
        summary: :func:`suite.report.frames.accuracy_summary` of the tabled cells.
        reference: ``reference/accuracy.csv`` (:func:`suite.report.frames.load_reference`).

    Returns:
        :func:`suite.report.frames.accuracy_table` of :data:`EXPERIMENT` with the paper's
        :data:`PAPER_EXPERIMENT` rows as its reference rows.
    """
    paper = paper_rows(reference).assign(experiment=EXPERIMENT)
    return rd.accuracy_table(summary, EXPERIMENT, paper)


def _paper_difference(paper: pd.DataFrame, first: str, second: str, sparsity: float) -> str:
    """``"+4.74"``: the paper's top-1 of ``first`` minus ``second`` at ``sparsity``; ``-``."""

    def top1(method: str) -> float:
        hit = paper[(paper["method"] == method) & ((paper["sparsity"] - sparsity).abs() < 1e-9)]
        return float(hit["top1"].iloc[0]) if len(hit) else math.nan

    diff = top1(first) - top1(second)
    return "-" if math.isnan(diff) else f"{diff:+.2f}"


def _verdict(claim: pd.Series) -> str:
    """``"better: +4.10 [+3.80, +4.40]"``: a claim's verdict and paired difference."""
    return f"{claim['verdict']}: {cl.format_difference(claim['diff'], claim['low'], claim['high'])}"


def verdict_table(claims: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per sparsity of our runs: each comparison's verdict and paired difference [95% CI]
    (points of top-1, first - second), beside the paper's ViT-B/16 difference of the same pair.

    Args:
        claims: :func:`suite.report.claims.claims_frame` over :data:`COMPARISONS`.
        reference: ``reference/accuracy.csv``.

    Returns:
        Columns of :data:`VERDICT_COLUMNS`, a row per sparsity (ascending); empty without
        claims of :data:`EXPERIMENT`.
    """
    ours = claims[claims["experiment"] == EXPERIMENT] if not claims.empty else claims
    paper = paper_rows(reference)
    rows = []
    for sparsity in sorted(set(ours["sparsity"])) if not ours.empty else []:
        row: dict[str, Any] = {"sparsity": rd.sparsity_label(sparsity)}
        for first, second in COMPARISONS:
            hit = ours[
                (ours["first"] == first)
                & (ours["second"] == second)
                & ((ours["sparsity"] - sparsity).abs() < 1e-9)
            ]
            row[f"{first} vs {second}"] = _verdict(hit.iloc[0]) if len(hit) else "-"
        for first, second in COMPARISONS:
            row[f"paper: {first} - {second}"] = _paper_difference(paper, first, second, sparsity)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(VERDICT_COLUMNS))


def transformer_section(summary: pd.DataFrame, tabled: pd.DataFrame) -> dict[str, Any]:
    """The report section "Neuron ablation on a transformer".

    Args:
        summary: :func:`suite.report.frames.accuracy_summary` of ``tabled``.
        tabled: the tabled rows of :func:`suite.report.frames.train_frame`.

    Returns:
        ``has_runs``: whether the store holds :data:`EXPERIMENT` records; ``table``: the
        accuracy table (:func:`accuracy_table`; the paper's rows alone without runs);
        ``verdicts``: :func:`verdict_table`; ``claims``: the claims frame; ``lines``: their
        prose (:func:`suite.report.claims.claim_lines`); ``summary``: the sentence counting
        them, flagging unequal measured densities (:func:`suite.report.claims.claims_summary`:
        ablation can leave part of a layer's budget unspent); ``experiment``, ``paper_experiment``,
        ``profile``, ``comparisons`` and ``level``.
    """
    reference = rd.load_reference("accuracy.csv")
    ours = tabled[tabled["experiment"] == EXPERIMENT] if not tabled.empty else tabled
    has_runs = not ours.empty
    claims = cl.claims_frame(ours, COMPARISONS) if has_runs else pd.DataFrame()
    return {
        "has_runs": has_runs,
        "table": accuracy_table(summary if has_runs else summary.iloc[0:0], reference),
        "verdicts": verdict_table(claims, reference) if has_runs else pd.DataFrame(),
        "claims": claims,
        "lines": cl.claim_lines(claims) if has_runs and not claims.empty else [],
        "summary": cl.claims_summary(claims) if has_runs else "",
        "experiment": EXPERIMENT,
        "paper_experiment": PAPER_EXPERIMENT,
        "profile": PROFILE,
        "comparisons": [f"`{a}` vs `{b}`" for a, b in COMPARISONS],
        "level": cl.LEVEL,
    }
