"""N:M vs constant fan-in, the accuracy side: N:M trainers beside SRigL and RigL at the same
sparsity (``make reproduce``; ``PROFILE=nm`` alone).

An N:M trainer keeps exactly N of every M consecutive inputs of a neuron, so its sparsity is
1 - N/M and its layer densities are uniform. It is compared with SRigL and RigL run with the
uniform distribution at the same sparsity (labels ``srigl_uniform`` and ``rigl_uniform``: the
default profile's ``srigl`` and ``rigl`` are ERK, other cells), per experiment, with the paired
differences and verdicts of :mod:`suite.report.claims` (``better`` / ``worse`` / ``no
measurable difference`` / ``too few seeds``). Everything is computed from the tabled cells; the
section is empty (and not rendered) without N:M records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from suite.report import claims as cl
from suite.report import frames as rd

#: the N:M trainer labels (suite/conf/trainer/nm_*.yaml) and the sparsity each one implies
NM_METHODS: Mapping[str, float] = {
    "nm_2_4_rigl": 0.5,
    "nm_1_4_rigl": 0.75,
    "nm_1_8_rigl": 0.875,
}
#: what N:M is compared with at its sparsity: constant fan-in (SRigL) and unstructured (RigL),
#: both with uniform layer densities like N:M (profile nm)
BASELINES: tuple[str, ...] = ("srigl_uniform", "rigl_uniform")
TABLE_COLUMNS = ("sparsity", "N:M", "top-1 N:M", *(f"top-1 {b}" for b in BASELINES))


def nm_comparisons(
    nm_methods: Sequence[str] = tuple(NM_METHODS), baselines: Sequence[str] = BASELINES
) -> list[tuple[str, str]]:
    """``(N:M label, baseline label)`` pairs for :func:`suite.report.claims.claims_frame`."""
    return [(nm, base) for nm in nm_methods for base in baselines]


def nm_claims(tabled: pd.DataFrame) -> pd.DataFrame:
    """Paired differences (N:M - baseline, points of top-1) per experiment and sparsity.

    Args:
        tabled: the tabled rows of :func:`suite.report.frames.train_frame`.

    Returns:
        :func:`suite.report.claims.claims_frame` over :func:`nm_comparisons` (columns of
        :data:`suite.report.claims.CLAIM_COLUMNS`); empty without N:M runs.
    """
    return cl.claims_frame(tabled, nm_comparisons())


def _cell(summary: pd.DataFrame, experiment: str, method: str, sparsity: float) -> str:
    """``"mean ± std (n=N), density D%"`` of one cell of ``summary``; ``-`` where none."""
    hit = summary[
        (summary["experiment"] == experiment)
        & (summary["method"] == method)
        & ((summary["sparsity"] - sparsity).abs() < 1e-9)
    ]
    if hit.empty:
        return "-"
    r = hit.iloc[0]
    return rd.format_accuracy(r["mean"], r["std"], r["n"], r["density"])


def _verdict(claims: pd.DataFrame, experiment: str, nm: str, base: str, sparsity: float) -> str:
    """``"better: +0.40 [+0.10, +0.70]"`` for N:M vs ``base``; ``-`` without a pair."""
    hit = claims[
        (claims["experiment"] == experiment)
        & (claims["first"] == nm)
        & (claims["second"] == base)
        & ((claims["sparsity"] - sparsity).abs() < 1e-9)
    ]
    if hit.empty:
        return "-"
    r = hit.iloc[0]
    return f"{r['verdict']}: {cl.format_difference(r['diff'], r['low'], r['high'])}"


def nm_accuracy_table(summary: pd.DataFrame, claims: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """One experiment: a row per N:M method with runs, at its sparsity, beside the baselines.

    Args:
        summary: :func:`suite.report.frames.accuracy_summary` of the tabled cells.
        claims: :func:`nm_claims` of the same cells.
        experiment: the experiment's name.

    Returns:
        Columns of :data:`TABLE_COLUMNS` (top-1 mean ± std over seeds with n and the measured
        density) and ``N:M vs <baseline>`` (verdict: paired difference [95% CI]); rows in
        order of sparsity.
    """
    ours = summary[summary["experiment"] == experiment]
    rows = []
    for nm, sparsity in sorted(NM_METHODS.items(), key=lambda kv: kv[1]):
        if not ((ours["method"] == nm) & ((ours["sparsity"] - sparsity).abs() < 1e-9)).any():
            continue
        row: dict[str, Any] = {
            "sparsity": rd.sparsity_label(sparsity),
            "N:M": nm,
            "top-1 N:M": _cell(ours, experiment, nm, sparsity),
        }
        for base in BASELINES:
            row[f"top-1 {base}"] = _cell(ours, experiment, base, sparsity)
        for base in BASELINES:
            row[f"N:M vs {base}"] = _verdict(claims, experiment, nm, base, sparsity)
        rows.append(row)
    cols = [*TABLE_COLUMNS, *(f"N:M vs {b}" for b in BASELINES)]
    return pd.DataFrame(rows, columns=cols)


def nm_accuracy_section(summary: pd.DataFrame, tabled: pd.DataFrame) -> dict[str, Any]:
    """The report section "N:M vs constant fan-in: accuracy".

    Args:
        summary: :func:`suite.report.frames.accuracy_summary` of ``tabled``.
        tabled: the tabled rows of :func:`suite.report.frames.train_frame`.

    Returns:
        ``experiments``: ``[(experiment, table)]`` of :func:`nm_accuracy_table` (empty without
        N:M runs: the template then renders nothing); ``claims``: :func:`nm_claims`;
        ``lines`` and ``summary``: their prose (:func:`suite.report.claims.claim_lines`,
        :func:`suite.report.claims.claims_summary`); ``baselines`` and ``level``.
    """
    claims = nm_claims(tabled) if not tabled.empty else pd.DataFrame()
    experiments = []
    if not summary.empty:
        for exp in summary.loc[summary["method"].isin(list(NM_METHODS)), "experiment"].unique():
            table = nm_accuracy_table(summary, claims, str(exp))
            if not table.empty:
                experiments.append((str(exp), table))
    return {
        "experiments": experiments,
        "claims": claims,
        "lines": cl.claim_lines(claims) if experiments and not claims.empty else [],
        "summary": cl.claims_summary(claims) if experiments else "",
        "baselines": list(BASELINES),
        "level": cl.LEVEL,
    }
