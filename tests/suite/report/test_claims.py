"""suite.report.claims: paired differences over seeds on synthetic seeds with a known effect,
and claims that are rendered from the numbers (a changed table changes every sentence)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_fixtures import train_config, train_metrics, write_store
from scipy import stats

from suite.report import claims as cl
from suite.report.app import README_BEGIN, README_END, build_report
from suite.results import make_record

ROOT = Path(__file__).resolve().parents[3]


def _seeds(values) -> pd.Series:
    return pd.Series(np.asarray(values, dtype=float), index=range(len(values)))


def _simulate(rng, effect: float, n: int, seed_sd: float = 2.0, noise_sd: float = 0.8):
    """Two methods run on the same ``n`` seeds: a shared seed effect (which pairing cancels)
    plus independent noise; the first is ``effect`` points more accurate on average."""
    seed_effect = rng.normal(0.0, seed_sd, n)
    second = 95.0 + seed_effect + rng.normal(0.0, noise_sd, n)
    first = 95.0 + effect + seed_effect + rng.normal(0.0, noise_sd, n)
    return _seeds(first), _seeds(second)


# --------------------------------------------------------------------------- the statistics


def test_the_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    a, b = _simulate(rng, 0.5, 7)
    pair = cl.paired_difference(a, b)
    expected = stats.ttest_rel(a, b).confidence_interval(0.95)
    assert pair.n == 7 and pair.mean == pytest.approx(float((a - b).mean()))
    assert (pair.low, pair.high) == pytest.approx((expected.low, expected.high))


@pytest.mark.parametrize("effect, verdict", [(3.0, cl.BETTER), (-3.0, cl.WORSE)])
def test_a_real_effect_is_detected_with_its_sign(effect, verdict):
    rng = np.random.default_rng(1)
    verdicts = [cl.paired_difference(*_simulate(rng, effect, 5)).verdict for _ in range(200)]
    # 3 points against a paired noise sd of 0.8 * sqrt(2) ~ 1.13: power well above 95% at n=5
    assert verdicts.count(verdict) / len(verdicts) > 0.95
    assert not any(v == (cl.WORSE if verdict == cl.BETTER else cl.BETTER) for v in verdicts)


def test_pairing_by_seed_removes_the_seed_to_seed_spread():
    # the seed effect (sd 2) is larger than the method effect (1): unpaired, the means' spread
    # would hide it; paired, the differences are 1 +- a little for every seed
    rng = np.random.default_rng(2)
    a, b = _simulate(rng, 1.0, 5, seed_sd=3.0, noise_sd=0.1)
    assert cl.paired_difference(a, b).verdict == cl.BETTER
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert welch.low < 0 < welch.high  # what an unpaired comparison would have said


def test_no_effect_reads_no_measurable_difference():
    a = _seeds([95.0, 96.0, 94.5, 97.0])
    b = _seeds([96.0, 95.0, 95.0, 96.5])  # differences -1, +1, -0.5, +0.5: mean 0
    pair = cl.paired_difference(a, b)
    assert pair.mean == pytest.approx(0.0) and pair.low < 0 < pair.high
    assert pair.verdict == cl.NO_DIFFERENCE
    rng = np.random.default_rng(3)
    verdicts = [cl.paired_difference(*_simulate(rng, 0.0, 5)).verdict for _ in range(400)]
    assert verdicts.count(cl.NO_DIFFERENCE) / len(verdicts) > 0.9  # ~95% by construction


@pytest.mark.parametrize("n", [3, 5, 10])
def test_the_95_percent_interval_covers_the_true_effect_about_95_percent_of_the_time(n):
    rng = np.random.default_rng(100 + n)
    effect, sims = 0.7, 2000
    hits = 0
    for _ in range(sims):
        pair = cl.paired_difference(*_simulate(rng, effect, n))
        hits += pair.low <= effect <= pair.high
    # binomial sd of the coverage over 2000 simulations is ~0.005
    assert 0.935 <= hits / sims <= 0.965


def test_seeds_are_paired_by_their_number_not_their_position():
    a = pd.Series([90.0, 91.0, 92.0, 50.0], index=[3, 1, 2, 9])  # seed 9: no partner
    b = pd.Series([88.0, 89.0, 90.0, 99.0], index=[1, 2, 3, 7])  # seed 7: no partner
    pair = cl.paired_difference(a, b)
    assert pair.n == 3
    assert pair.mean == pytest.approx(((91 - 88) + (92 - 89) + (90 - 90)) / 3)


def test_fewer_than_two_paired_seeds_are_too_few():
    one = cl.paired_difference(_seeds([95.0]), _seeds([90.0]))
    assert (one.n, one.verdict) == (1, cl.TOO_FEW) and math.isnan(one.low)
    none = cl.paired_difference(pd.Series([95.0], index=[1]), pd.Series([90.0], index=[2]))
    assert (none.n, none.verdict) == (0, cl.TOO_FEW) and math.isnan(none.mean)


def test_identical_seeds_give_a_zero_width_interval():
    same = cl.paired_difference(_seeds([97.0, 98.0, 96.5]), _seeds([97.0, 98.0, 96.5]))
    assert (same.low, same.high, same.verdict) == (0.0, 0.0, cl.NO_DIFFERENCE)
    shifted = cl.paired_difference(_seeds([97.5, 98.5, 97.0]), _seeds([97.0, 98.0, 96.5]))
    assert (shifted.low, shifted.high, shifted.verdict) == (0.5, 0.5, cl.BETTER)


def test_mean_interval_is_the_t_interval_of_a_cells_seeds():
    values = [95.0, 96.5, 94.0, 97.0]
    low, high = cl.mean_interval(values)
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert (low, high) == pytest.approx(expected)
    assert all(math.isnan(x) for x in cl.mean_interval([95.0]))


# --------------------------------------------------------------------------- claims of a store


def _train_frame(rows) -> pd.DataFrame:
    """A tabled train frame from (experiment, method, sparsity, seed, top1, density) tuples."""
    cols = ["experiment", "method", "sparsity", "seed", "top1", "density"]
    return pd.DataFrame(rows, columns=cols)


def test_claims_pair_dense_with_every_sparsity_and_skip_pairs_without_runs():
    rows = [("mlp", "dense", 0.0, s, 97.0 + s, 1.0) for s in range(3)]
    rows += [("mlp", "srigl", sp, s, 96.0 + s, 1 - sp) for sp in (0.9, 0.99) for s in range(3)]
    rows += [("mlp", "rigl", 0.9, s, 95.0 + s, 0.1) for s in range(3)]  # no rigl at 99%
    claims = cl.claims_frame(_train_frame(rows))
    pairs = set(zip(claims["first"], claims["second"], claims["sparsity"]))
    assert pairs == {("srigl", "dense", 0.9), ("srigl", "dense", 0.99), ("srigl", "rigl", 0.9)}
    vs_dense = claims[claims["second"] == "dense"].iloc[0]
    assert (vs_dense["diff"], vs_dense["low"], vs_dense["high"]) == (-1.0, -1.0, -1.0)
    assert vs_dense["verdict"] == cl.WORSE and vs_dense["density_second"] == 1.0
    vs_rigl = claims[claims["second"] == "rigl"].iloc[0]
    assert vs_rigl["verdict"] == cl.BETTER and vs_rigl["density_first"] == pytest.approx(0.1)


def test_claim_lines_group_sparsities_by_verdict():
    rows = [("cnn", "rigl", sp, s, 95.0, 0.1) for sp in (0.8, 0.9, 0.99) for s in range(3)]
    rows += [("cnn", "srigl", 0.8, s, 95.0 + (-1) ** s, 0.1) for s in range(3)]  # no difference
    rows += [("cnn", "srigl", 0.9, s, 97.0 + 0.1 * s, 0.1) for s in range(3)]  # better
    rows += [("cnn", "srigl", 0.99, s, 90.0 + 0.1 * s, 0.1) for s in range(3)]  # worse
    claims = cl.claims_frame(_train_frame(rows))
    (line,) = cl.claim_lines(claims)
    assert line.startswith("- `srigl` vs `rigl`, cnn: better at 90% (+2.10 [")
    assert "; worse at 99% (-4.90 [" in line
    assert "; no measurable difference at 80% (+0.33 [" in line
    summary = cl.claims_summary(claims)
    assert summary.startswith("3 comparisons: 1 better, 1 worse, 1 no measurable difference.")
    assert "densities differ" not in summary  # equal budgets: nothing to flag


def test_the_summary_flags_comparisons_of_unequal_budgets():
    rows = [("mlp", "rigl", 0.99, s, 90.0 + s, 0.0100) for s in range(3)]
    rows += [("mlp", "srigl", 0.99, s, 91.0 + s, 0.0094) for s in range(3)]  # 6% fewer weights
    rows += [("mlp", "dense", 0.0, s, 97.0 + s, 1.0) for s in range(3)]  # vs dense: never
    claims = cl.claims_frame(_train_frame(rows))
    assert cl.unequal_budgets(claims) == 1
    assert "In 1 comparison(s) of two sparse methods the measured densities differ" in (
        cl.claims_summary(claims)
    )
    assert cl.unequal_budgets(claims, tolerance=0.1) == 0


# --------------------------------------------------------------------------- rendered claims


def _store(root: Path, srigl_gain: float) -> Path:
    """Records of one experiment: dense, rigl and srigl at 90% over 3 seeds; srigl is
    ``srigl_gain`` points above rigl on every seed (a small per-seed wobble on top)."""
    records = []
    for seed in range(3):
        wobble = 0.05 * seed
        for method, top1 in (
            ("dense", 97.0 + wobble),
            ("rigl", 94.0 + wobble),
            ("srigl", 94.0 + srigl_gain + 2 * wobble),
        ):
            records.append(
                make_record(
                    "train",
                    train_config("digits_mlp", method, 0.9, seed),
                    train_metrics(top1, method),
                )
            )
    write_store(root / "results" / "runs", records)
    (root / "README.md").write_text(f"# p\n\n{README_BEGIN}\n{README_END}\n", encoding="utf-8")
    return root


def _claim(text: str, pair: str) -> str:
    """The rendered claim line of ``pair`` (``"`srigl` vs `rigl`"``)."""
    (line,) = [x for x in text.splitlines() if x.startswith(f"- {pair}, digits_mlp:")]
    return line


@pytest.fixture(scope="module")
def flipped(tmp_path_factory):
    """The same experiment reported twice, srigl 2 points above rigl, then 2 points below."""
    out = {}
    for name, gain in (("up", 2.0), ("down", -2.0), ("same", 0.0)):
        root = _store(tmp_path_factory.mktemp(name), gain)
        rep = build_report(root / "results" / "runs", root / "results")
        out[name] = {
            "report": rep.path.read_text(encoding="utf-8"),
            "readme": (root / "README.md").read_text(encoding="utf-8"),
        }
    return out


def test_the_rendered_verdict_follows_the_numbers(flipped):
    up, down, same = (_claim(flipped[k]["report"], "`srigl` vs `rigl`") for k in flipped)
    assert up.startswith("- `srigl` vs `rigl`, digits_mlp: better at 90% (+2.05 [")
    assert down.startswith("- `srigl` vs `rigl`, digits_mlp: worse at 90% (-1.95 [")
    assert same.startswith("- `srigl` vs `rigl`, digits_mlp: no measurable difference at 90%")
    assert "better" not in down and "worse" not in up
    vs_dense_up = _claim(flipped["up"]["report"], "`srigl` vs `dense`")
    vs_dense_down = _claim(flipped["down"]["report"], "`srigl` vs `dense`")
    assert "worse at 90% (-0.95 [" in vs_dense_up and "worse at 90% (-4.95 [" in vs_dense_down


def test_no_claim_sentence_survives_a_changed_table(flipped):
    def claim_lines(text: str) -> set[str]:
        return {x for x in text.splitlines() if x.startswith("- `")}

    up, down = claim_lines(flipped["up"]["report"]), claim_lines(flipped["down"]["report"])
    assert up and down and not up & down
    for name in flipped:  # the README block says what REPORT says, line for line
        block = flipped[name]["readme"].split(README_BEGIN)[1].split(README_END)[0]
        assert claim_lines(block) == claim_lines(flipped[name]["report"])
        assert claim_lines(block)


def test_the_claims_table_holds_both_densities(flipped):
    section = flipped["up"]["report"].split("## Claims: paired differences over seeds")[1]
    row = next(x for x in section.splitlines() if x.startswith("| srigl vs rigl"))
    assert "10.00% / 10.00%" in row and "better" in row and "| 3 " in row


# --------------------------------------------------------------------------- the README

COMPARATIVE = re.compile(
    r"(?<![-\w])(above|below|better|worse|beats?|outperforms?|collapses?|higher|lower)(?![-\w])",
    re.I,
)
METHODS = re.compile(r"`(dense|static|set|s?rigl\w*)`|\b(SRigL|RigL|SET)\b")


def test_the_readme_states_no_accuracy_claim_outside_its_generated_block():
    """A sentence outside the block that names a training method and compares (above, better,
    collapses...) is a hand-written claim: it belongs in the rendered block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    before, rest = text.split(README_BEGIN)
    outside = before + rest.split(README_END)[1]
    prose = re.sub(r"```.*?```", "", outside, flags=re.S)  # code blocks are not claims
    prose = "\n".join(x for x in prose.splitlines() if not x.lstrip().startswith("|"))
    sentences = re.split(r"(?<=[.!?])\s+", prose.replace("\n", " "))
    claims = [s for s in sentences if COMPARATIVE.search(s) and METHODS.search(s)]
    assert claims == []
